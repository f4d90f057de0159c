"""`fiva anonymize` with each generator against `deface`, whole videos (BENCHMARKS.md, the default's rows).

    python scripts/benchmark_generators.py [--rounds 2] [--seconds 5] [--generators anchor-face fiva]
        [CLIP ...]   (default: the two BENCHMARKS clips of ../shared/data/videos)

The first --seconds of each clip (scripts/benchmark.py's `cut_clip`), then per round `deface CLIP`
and `fiva anonymize CLIP --generator G` for each G, interleaved so load changes hit all alike; the
fastest of the rounds is kept. Prints fps per tool, the ratios to deface and the 1-minute load.
Every command runs with OMP_NUM_THREADS=1 (fiva's torch and OpenCV threads, deface's
onnxruntime keeps its own pool).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchmark import cut_clip  # noqa: E402

CLIPS = ["../shared/data/videos/liveportrait_d13.mp4", "../shared/data/videos/facenet_pytorch_crowd.mp4"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="*", default=CLIPS)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--generators", nargs="+", default=["anchor-face", "fiva"])
    a = ap.parse_args()
    bin_dir = Path(sys.executable).parent
    tmp = Path(tempfile.mkdtemp())
    try:
        for src in map(Path, a.clips):
            clip = tmp / src.name
            n = cut_clip(src, clip, a.seconds)
            cmds = {"deface": [str(bin_dir / "deface"), str(clip), "-o", str(tmp / "deface.mp4")]}
            for g in a.generators:
                cmds[g] = [str(bin_dir / "fiva"), "anonymize", str(clip), "-o", str(tmp / f"{g}.mp4"), "--no-progress",
                           "--overwrite", "--generator", g]
            best: dict[str, float] = {}
            for r in range(a.rounds):
                for name, cmd in cmds.items():
                    env = dict(os.environ, OMP_NUM_THREADS="1")
                    t = time.perf_counter()
                    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    t = time.perf_counter() - t
                    best[name] = min(best.get(name, float("inf")), t)
                    print(f"{src.name} round {r} {name}: {n / t:.2f} fps, load {os.getloadavg()[0]:.1f}", flush=True)
            fps = {k: round(n / v, 2) for k, v in best.items()}
            print(json.dumps({"clip": src.name, "frames": n, "fps": fps,
                              "over_deface": {k: round(v / fps["deface"], 2) for k, v in fps.items() if k != "deface"}}), flush=True)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
