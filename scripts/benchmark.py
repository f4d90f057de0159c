"""Speed figures for BENCHMARKS.md, each measured in the same run as its peer.

    python scripts/benchmark.py [--video CLIP...] [--seconds 5]

1. Generator cost: FLOPs per face (torch's FLOP counter) and ms per face, beside SFace on the same
   thread count (the identity encoder every pipeline step needs anyway).
2. Whole-video throughput: `fiva anonymize` (its full default method) vs `deface` (its default
   blur; the peer users know) on the same clips' first seconds, as a ratio of frames per second,
   with each tool's face recall against the union of both tools' detectors. The two tools run in
   `--rounds` interleaved rounds (fiva then deface, then deface then fiva, ...) and the ratio is
   the median of the rounds' ratios: one run of each moved by up to 40% between runs of this
   script on one VM (d13 2.25x, then 1.55x), as the VM's load came and went.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fiva.faces.identity import load_sface
from fiva.models import load_generator
from fiva.weights import DEFAULT_GENERATOR


def per_call_ms(fn, reps=30):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1000


def model_costs(threads: int) -> dict:
    torch.set_num_threads(threads)
    G, sface = load_generator(DEFAULT_GENERATOR), load_sface()
    x, z = torch.rand(1, 3, 112, 112) * 2 - 1, torch.randn(1, 128)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            G(x, z)
        flops = fc.get_total_flops()
        g_ms = per_call_ms(lambda: G(x, z))
        s_ms = per_call_ms(lambda: sface(x))
    return {"threads": threads, "generator_gflops_per_face": flops / 1e9, "generator_ms_per_face": g_ms,
            "sface_ms_per_face": s_ms, "generator_over_sface": g_ms / s_ms,
            "generator_params_M": sum(p.numel() for p in G.parameters()) / 1e6}


def cut_clip(src: Path, dst: Path, seconds: float) -> int:
    """The first `seconds` of `src` (video only), re-encoded near-losslessly; returns the frame count."""
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vs = out.add_stream("libx264", rate=vin.average_rate)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vs.options = {"crf": "12"}
        for f in inp.decode(video=0):
            if f.time is not None and f.time >= seconds:
                break
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")))
            n += 1
        out.mux(vs.encode(None))
    return n


def timed(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def face_recall(clip: Path, outputs: dict[str, Path]) -> dict:
    """Share of reference faces each tool changed. Reference faces: the union of both tools'
    detectors on the original frames (YuNet at 0.6, deface's CenterFace at 0.5), so neither tool
    is judged by its own detector alone. A face counts as anonymized when the centre of its box
    changed (mean |difference|) by 4 grey levels more than that tool's re-encoding noise away from
    all faces."""
    from deface.centerface import CenterFace

    from fiva.faces import FaceDetector
    from fiva.faces.detect import iou

    src = frames_of(clip)
    outs = {k: frames_of(p) for k, p in outputs.items()}
    h, w = src[0].shape[:2]
    outs = {k: [f[:h, :w] for f in v] for k, v in outs.items()}  # deface pads 1080 to 1088
    yunet, centerface = FaceDetector(), CenterFace(in_shape=(src[0].shape[1], src[0].shape[0]))
    refs = []
    for rgb in src:
        boxes = list(yunet(rgb).boxes)
        cf, _ = centerface(rgb, threshold=0.5)
        for b in cf[:, :4]:
            if not boxes or iou(b, np.array(boxes)).max() < 0.3:
                boxes.append(b)
        refs.append(boxes)
    floor = {}
    for k, frames in outs.items():  # re-encoding noise away from the faces
        diffs = []
        for rgb, out, boxes in zip(src[::5], frames[::5], refs[::5]):
            keep = np.ones(rgb.shape[:2], bool)
            for x1, y1, x2, y2 in boxes:
                w, h = x2 - x1, y2 - y1
                keep[max(int(y1 - h), 0):int(y2 + h), max(int(x1 - w), 0):int(x2 + w)] = False
            if keep.any():  # a close-up may leave nothing away from the face
                diffs.append(np.abs(out.astype(int) - rgb)[keep].mean())
        floor[k] = float(np.mean(diffs)) if diffs else 0.0
    total, changed = 0, {k: 0 for k in outputs}
    for i, (rgb, boxes) in enumerate(zip(src, refs)):
        for x1, y1, x2, y2 in boxes:
            cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 0.3, (y2 - y1) * 0.3
            ys = slice(max(int(cy - hh), 0), max(int(cy + hh), 1))
            xs = slice(max(int(cx - hw), 0), max(int(cx + hw), 1))
            total += 1
            for k, frames in outs.items():
                if i < len(frames) and np.abs(frames[i][ys, xs].astype(int) - rgb[ys, xs]).mean() > floor[k] + 4.0:
                    changed[k] += 1
    res = {"reference_faces": total}
    for k in outputs:
        res.update({f"{k}_recall": changed[k] / max(total, 1), f"{k}_missed": total - changed[k], f"{k}_noise_floor": floor[k]})
    return res


def video_throughput(video: Path, seconds: float, rounds: int) -> dict:
    tmp = Path(tempfile.mkdtemp())
    clip = tmp / "clip.mp4"
    frames = cut_clip(video, clip, seconds)
    bin_dir = Path(sys.executable).parent
    res = {"clip": video.name, "seconds": seconds, "frames": frames}
    with av.open(str(clip)) as c:
        res["resolution"] = f"{c.streams.video[0].width}x{c.streams.video[0].height}"
    outputs = {"fiva": tmp / "fiva.mp4"}
    fiva = [str(bin_dir / "fiva"), "anonymize", str(clip), "-o", str(outputs["fiva"]), "--no-progress", "--overwrite"]
    deface = shutil.which("deface", path=str(bin_dir)) or shutil.which("deface")
    runs = {"fiva": lambda: timed(fiva)}
    if deface:
        outputs["deface"] = tmp / "deface.mp4"
        runs["deface"] = lambda: timed([deface, str(clip), "-o", str(outputs["deface"])])
    fps = {k: [] for k in runs}
    for r in range(rounds):  # interleaved, each tool first in every other round
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            fps[k].append(frames / runs[k]())
    res["fiva_fps"] = float(np.median(fps["fiva"]))
    res["fiva_fps_rounds"] = fps["fiva"]
    every = fiva[:-1] + ["--fallback", "none", "-o", str(tmp / "every.mp4")]
    res["fiva_generate_every_face_fps"] = frames / timed(every)  # no fallback: the generator on every face
    blur = fiva[:-1] + ["--method", "blur", "-o", str(tmp / "blur.mp4")]
    res["fiva_blur_fps"] = frames / timed(blur)
    if deface:
        res["deface_fps"] = float(np.median(fps["deface"]))
        res["deface_fps_rounds"] = fps["deface"]
        ratios = [f / d for f, d in zip(fps["fiva"], fps["deface"])]
        res["fiva_over_deface_rounds"] = ratios
        res["fiva_over_deface"] = float(np.median(ratios))
        res.update(face_recall(clip, outputs))
    shutil.rmtree(tmp)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", nargs="*", default=["../shared/data/videos/liveportrait_d13.mp4",
                                                   "../shared/data/videos/facenet_pytorch_crowd.mp4"])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed runs of each tool per clip")
    ap.add_argument("--skip-models", action="store_true")
    a = ap.parse_args()
    out = {} if a.skip_models else {"models": [model_costs(1), model_costs(2)]}
    out["videos"] = [video_throughput(Path(v), a.seconds, max(a.rounds, 1)) for v in a.video if Path(v).is_file()]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
