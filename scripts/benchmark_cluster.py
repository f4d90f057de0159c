"""Cluster figures for BENCHMARKS.md: `fiva anonymize` in one process against `--ray local`.

    python scripts/benchmark_cluster.py [--lfw ../shared/data/lfw] [--photos 200]
        [--video CLIP ...] [--seconds 5] [--json runs/benchmark_cluster.json]

1. Files per second on the same inputs, each the wall time of the whole command in a subprocess
   (start-up included): the first photo of each of the first N LFW people (sorted), and the
   benchmark clips' first seconds (cut as scripts/benchmark.py does). Rows: one process on 1 and
   on 2 threads; `--ray local --workers 2` with 1 thread a worker; for the photos also with an
   identity store (every face through the identity actor).
2. Ray's start-up cost: a local Ray instance, then two workers with their models loaded.
3. The identity actor's calls per second (Algorithm 1, one call per new face) at 0 to 100,000
   stored identities: one caller waiting for each answer, and 2,000 calls in flight at once (the
   actor's own limit, which bounds how many new faces a second a whole cluster can take).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import cut_clip  # noqa: E402 - the clips cut exactly as for the other video figures

FIVA = [sys.executable, "-m", "fiva.cli", "anonymize"]
CLIPS = ("../shared/data/videos/liveportrait_d13.mp4", "../shared/data/videos/facenet_pytorch_crowd.mp4")


def timed_run(inputs: list[str], out: Path, threads: int | None, extra: list[str]) -> dict:
    """Wall time of one `fiva anonymize` command; `threads` None: --ray (workers set their own)."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch takes its thread count from it
    report = out.with_suffix(".json")
    t = time.perf_counter()
    subprocess.run(FIVA + inputs + ["-o", str(out), "--report", str(report), "--no-progress"] + extra,
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    rep = json.loads(report.read_text())
    frames = sum(r.get("frames", 0) for r in rep["files"])
    return {"wall_s": round(wall, 2), "files": len(rep["files"]), "done": rep["anonymized"],
            "files_per_s": round(len(rep["files"]) / wall, 3), "frames": frames,
            "frames_per_s": round(frames / wall, 2) if frames else None, "faces": rep["totals"].get("faces", 0)}


def rows(name: str, inputs: list[str], tmp: Path, store: bool) -> list[dict]:
    runs = [("1 process, 1 thread", 1, []), ("1 process, 2 threads", 2, []),
            ("Ray local, 2 workers x 1 thread", None, ["--ray", "local", "--workers", "2", "--worker-threads", "1"])]
    if store:
        runs.append(("Ray local, 2 workers x 1 thread, --identity-store", None,
                     ["--ray", "local", "--workers", "2", "--worker-threads", "1", "--identity-store", str(tmp / "ids")]))
    out = []
    for k, (label, threads, extra) in enumerate(runs):
        res = timed_run(inputs, tmp / f"{name}_{k}", threads, extra)
        out.append({"inputs": name, "run": label, **res})
        print(json.dumps(out[-1]), flush=True)
    return out


def startup() -> dict:
    """Seconds to a local Ray instance, then to two workers with their models loaded."""
    import ray

    from fiva.anonymize.cluster import FileWorker
    from fiva.anonymize.frame import AnonymizeConfig

    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    init = time.perf_counter() - t
    t = time.perf_counter()
    workers = [ray.remote(FileWorker).options(num_cpus=1).remote(AnonymizeConfig(), 1) for _ in range(2)]
    assert ray.get([w.ready.remote() for w in workers]) == [None, None]
    ready = time.perf_counter() - t
    ray.shutdown()
    return {"ray_init_s": round(init, 2), "two_workers_ready_s": round(ready, 2), "total_s": round(init + ready, 2)}


def identity_actor(sizes=(0, 1_000, 10_000, 100_000), calls=500, in_flight=2_000) -> list[dict]:
    """Calls per second to the identity actor: a known person (a lookup) and a new one (lookup,
    insert, Eq. 1 sampling), one at a time and pipelined."""
    import ray
    from safetensors.numpy import load_file

    from fiva.anonymize.cluster import IdentityActor
    from fiva.weights import DEFAULT_ANCHORS

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    anchors = load_file(str(DEFAULT_ANCHORS))["anchors"].astype(np.float32)
    rng = np.random.default_rng(0)
    unit = lambda v: (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    out = []
    for n in sizes:
        t_id = unit(rng.normal(size=(n, anchors.shape[1])))
        actor = ray.remote(IdentityActor).options(num_cpus=0).remote(anchors, 0.0, 0, 0.66, t_id, t_id.copy())
        ray.get(actor.pairs.remote())
        row = {"stored": n}
        for kind in ("known", "new"):
            if kind == "known" and n == 0:
                continue
            zs = [unit(t_id[i % n] + 0.01 * rng.normal(size=t_id.shape[1])) if kind == "known"
                  else unit(rng.normal(size=anchors.shape[1])) for i in range(calls + in_flight)]
            t = time.perf_counter()
            for z in zs[:calls]:
                ray.get(actor.track.remote(z))
            row[f"{kind}_one_at_a_time_per_s"] = round(calls / (time.perf_counter() - t))
            t = time.perf_counter()
            ray.get([actor.track.remote(z) for z in zs[calls:]])
            row[f"{kind}_in_flight_per_s"] = round(in_flight / (time.perf_counter() - t))
        ray.kill(actor)
        out.append(row)
        print(json.dumps(row), flush=True)
    ray.shutdown()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--video", nargs="*", default=list(CLIPS))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", default="runs/benchmark_cluster.json")
    a = ap.parse_args()
    result = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="fiva-cluster-bench-"))
    try:
        photos = tmp / "photos"
        photos.mkdir()
        people = sorted(p for p in (Path(a.lfw) / "images").iterdir() if p.is_dir())[: a.photos]
        for person in people:
            shutil.copy(sorted(person.glob("*.jpg"))[0], photos)
        clips = tmp / "clips"
        clips.mkdir()
        result["clips"] = {Path(v).name: cut_clip(Path(v), clips / Path(v).name, a.seconds) for v in a.video}
        result["startup"] = startup()
        print(json.dumps(result["startup"]), flush=True)
        result["throughput"] = rows("photos", [str(photos)], tmp, store=True) + rows("clips", [str(clips)], tmp, store=False)
        result["identity_actor"] = identity_actor()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2))
    print(f"written: {a.json}")


if __name__ == "__main__":
    main()
