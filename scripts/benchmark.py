"""Speed figures for BENCHMARKS.md, each measured in the same run as its peer.

    python scripts/benchmark.py [--video ../shared/data/videos/liveportrait_d13.mp4] [--frames 60]

1. Generator cost: FLOPs per face (torch's FLOP counter) and ms per face, beside SFace on the same
   thread count (the identity encoder every pipeline step needs anyway).
2. Whole-video throughput: `fiva anonymize` vs `deface` (the peer users know) on the same clip's
   first N frames, as a ratio of frames per second.
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


def cut_clip(src: Path, dst: Path, frames: int) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vs = out.add_stream("libx264", rate=vin.average_rate)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        for i, f in enumerate(inp.decode(video=0)):
            if i >= frames:
                break
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")))
        out.mux(vs.encode(None))


def timed(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def video_throughput(video: Path, frames: int) -> dict:
    tmp = Path(tempfile.mkdtemp())
    clip = tmp / "clip.mp4"
    cut_clip(video, clip, frames)
    bin_dir = Path(sys.executable).parent
    res = {"clip": video.name, "frames": frames}
    with av.open(str(clip)) as c:
        res["resolution"] = f"{c.streams.video[0].width}x{c.streams.video[0].height}"
    fiva = [str(bin_dir / "fiva"), "anonymize", str(clip), "-o", str(tmp / "fiva.mp4"), "--no-progress", "--overwrite"]
    res["fiva_fps"] = frames / timed(fiva)
    blur = fiva[:-1] + ["--method", "blur", "-o", str(tmp / "blur.mp4")]
    res["fiva_blur_fps"] = frames / timed(blur)
    deface = shutil.which("deface", path=str(bin_dir)) or shutil.which("deface")
    if deface:
        res["deface_fps"] = frames / timed([deface, str(clip), "-o", str(tmp / "deface.mp4")])
        res["fiva_over_deface"] = res["fiva_fps"] / res["deface_fps"]
    shutil.rmtree(tmp)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default="../shared/data/videos/liveportrait_d13.mp4")
    ap.add_argument("--frames", type=int, default=60)
    a = ap.parse_args()
    out = {"models": [model_costs(1), model_costs(2)]}
    if Path(a.video).is_file():
        out["video"] = video_throughput(Path(a.video), a.frames)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
