"""`fiva anonymize --ray`: one run spread over a Ray cluster, with a single run's guarantees.

The driver (the `fiva` process) expands the inputs, plans the outputs and handles what needs no
model, as a single run does: missing or unsupported inputs get their one-line error, existing
outputs are skipped. The other files go one at a time to a pool of worker actors, each holding its
own Anonymizer (models loaded once) and running runner.process_file, the single run's own code:
the same atomic writes and the same per-file seed (runner.file_seed), so an output is bit-identical
to the single run's. Workers write the outputs themselves, so every node must see the inputs and
the output folder at the same paths (a shared filesystem).

A worker that dies mid-file (killed, out of memory, its node lost) leaves at most a temporary file,
which is removed; its file goes back to the queue for the next free worker (at most MAX_ATTEMPTS
tries) and a fresh worker takes the dead one's place. A file that kills MAX_ATTEMPTS workers fails
with its one-line error, and the exit code is 1 as for any failed file.

With --identity-store one IdentityActor owns the ITM's pairs and runs Algorithm 1 for every worker
(one call per new face; tracked video faces are re-identified every `reembed_every` frames), so
concurrent workers share one table and a person gets one fake identity across the cluster. The
driver loads the store into it at the start and saves it as a single run does (owner-only file),
every SAVE_EVERY seconds, at the end and on interruption. Without the option nothing about
identities leaves a worker.
"""
from __future__ import annotations

import glob
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io import VIDEO_EXTS, InputError
from .runner import FileJob, build_config, check_file, finish_run, plan_jobs, process_file, video_options

MAX_ATTEMPTS = 3  # workers a file may take down before it counts as failed
SAVE_EVERY = 30.0  # seconds between identity-store saves during a run


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide a `--ray` run goes."""

    address: str  # "local": start Ray on this machine; else a running cluster's address (HOST:PORT or "auto")
    workers: int | None = None  # None: as many as the CPUs allow at `threads` each
    threads: int = 1  # CPU threads (and Ray CPUs) per worker

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.threads < 1:
            raise ValueError("--worker-threads must be at least 1")


class IdentityActor:
    """The ITM (Algorithm 1) for the whole cluster: one table of (real, fake) identity pairs that
    every worker looks up and inserts into, one call at a time, so two workers meeting a new person
    at once still give them one fake identity."""

    def __init__(self, anchors: np.ndarray, margin: float, seed: int, threshold: float, t_id: np.ndarray, f_id: np.ndarray):
        from .anchors import AnchorSpace
        from .itm import IdentityTrackingModule

        self.itm = IdentityTrackingModule(AnchorSpace(anchors, margin=margin, seed=seed), threshold=threshold)
        self.itm.set_pairs(t_id, f_id)

    def track(self, z_id: np.ndarray) -> tuple[np.ndarray, int]:
        return self.itm(z_id)

    def reassign(self, key: int, z_a: np.ndarray) -> None:
        self.itm.reassign(key, z_a)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.itm.pairs()


class RemoteITM:
    """Stands in for a worker's IdentityTrackingModule: Algorithm 1 runs in the IdentityActor.
    `anchors` stays local: a retry after failed verification draws its other anchor here."""

    def __init__(self, actor, anchors):
        self.actor, self.anchors = actor, anchors

    def __call__(self, z_id: np.ndarray) -> tuple[np.ndarray, int]:
        import ray

        z_a, key = ray.get(self.actor.track.remote(z_id))
        return np.array(z_a), key

    def reassign(self, key: int, z_a: np.ndarray) -> None:
        import ray

        ray.get(self.actor.reassign.remote(key, z_a))

    def reset(self) -> None:
        pass  # the store's identities outlive files (workers never reset them)


class Progress:
    """Frames done per file, reported by the workers and collected by the driver's progress bar."""

    def __init__(self):
        self.frames: Counter = Counter()

    def add(self, index: int, n: int) -> None:
        self.frames[index] += n

    def take(self) -> dict:
        out, self.frames = dict(self.frames), Counter()
        return out


class FileWorker:
    """One worker process: an Anonymizer with its models, files in, report records out."""

    def __init__(self, cfg, threads: int, identities=None, progress=None):
        import cv2
        import ray
        import torch

        self.error, self.progress = None, progress
        self.name = f"{ray.util.get_node_ip_address()}:{os.getpid()}"
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        try:
            from .frame import Anonymizer

            self.anonymizer = Anonymizer(replace(cfg, progress=False))  # the driver draws the bars
            if identities is not None and self.anonymizer.generator is not None:
                self.anonymizer.itm = RemoteITM(identities, self.anonymizer.itm.anchors)
        except (ValueError, OSError, RuntimeError, ImportError) as e:  # bad settings: the driver says so, once
            self.error = str(e).splitlines()[0] if str(e) else type(e).__name__

    def ready(self) -> str | None:
        """None once the models are loaded, else why they could not be."""
        return self.error

    def run(self, index: int, job: FileJob, overwrite: bool, options: dict, keep_identities: bool) -> dict:
        counted = [0, time.monotonic()]

        def on_frame():  # batched: one message to the progress actor every half second at most
            counted[0] += 1
            if time.monotonic() - counted[1] > 0.5:
                self.progress.add.remote(index, counted[0])
                counted[:] = [0, time.monotonic()]

        if self.progress is not None and job.src.suffix.lower() in VIDEO_EXTS:
            options = dict(options, on_frame=on_frame)
        rec = process_file(self.anonymizer, job, overwrite, options, keep_identities)
        if counted[0]:
            self.progress.add.remote(index, counted[0])
        rec["worker"] = self.name
        return rec


def run_cluster(a, cc: ClusterConfig) -> int:
    """`fiva anonymize ... --ray ADDRESS`: returns the exit code (0, 1 if any file failed, 2 if none found)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'fiva[cluster]'") from None
    jobs = plan_jobs(a)
    if not jobs:
        print("fiva: no input images or videos found", file=sys.stderr)
        return 2
    cfg = build_config(a)
    store = Path(a.identity_store) if a.identity_store else None
    if store is not None and cfg.method != "fiva":
        raise ValueError("--identity-store needs --method fiva (the baselines have no identities)")
    # What needs no model is done here, in the single run's words.
    records: list[dict | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        rec = {"input": str(job.src), "output": str(job.dst)}
        try:
            if check_file(job.src, job.dst, a.overwrite):
                records[i] = dict(rec, status="skipped", faces={}, seconds=0.0)
            else:
                todo.append(i)
        except InputError as e:
            records[i] = dict(rec, status="failed", error=str(e), faces={}, seconds=0.0)
            print(f"fiva: error: {e}", file=sys.stderr)
    owned = _connect(ray, cc)
    # A scheduler's SIGTERM ends the run as Ctrl-C does: the store saved, no half-written files.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        run = _ClusterRun(ray, cc, cfg, a, jobs, records, store)
        try:
            run.go(todo)
        finally:
            run.close()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if owned:
            ray.shutdown()
    totals = sum((Counter(r["faces"]) for r in records), Counter())
    return finish_run(a, cfg, records, totals)


def _connect(ray, cc: ClusterConfig) -> bool:
    """Join (or start) the cluster; True when this call made the connection (and closes it)."""
    import logging

    if ray.is_initialized():
        return False  # the caller (a notebook, a test) has joined a cluster already
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if cc.address == "local":
            n = cc.workers or max(1, (os.cpu_count() or 1) // cc.threads)
            ray.init(address="local", num_cpus=n * cc.threads, include_dashboard=False, **quiet)
        else:
            ray.init(address=cc.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"--ray {cc.address}: cannot join the cluster ({msg})") from None
    return True


class _ClusterRun:
    """The driver's loop: workers, the queue of files, retries, progress, the identity store."""

    def __init__(self, ray, cc: ClusterConfig, cfg, a, jobs: list[FileJob], records: list, store: Path | None):
        self.ray, self.cc, self.a, self.jobs, self.records, self.store = ray, cc, a, jobs, records, store
        # Workers get absolute paths: their working folder is not necessarily ours.
        self.remote_jobs = [FileJob(_absolute(j.src), _absolute(j.dst), j.key) for j in jobs]
        self.cfg = replace(cfg, model=_absolute(cfg.model), anchors=_absolute(cfg.anchors), attack=_absolute(cfg.attack),
                           swap_source=_absolute(cfg.swap_source), keep=tuple(map(_absolute, cfg.keep)),
                           only=tuple(map(_absolute, cfg.only)))
        self.options = video_options(a)
        self.starting: dict = {}  # ready() ref -> worker
        self.idle: list = []
        self.running: dict = {}  # run() ref -> (worker, job index)
        self.attempts: Counter = Counter()
        self.frames: Counter = Counter()  # frames counted so far per file in flight
        self.itm = self.identities = self.progress = None
        self.saved, self.unsaved = -SAVE_EVERY, False  # the first file done saves at once, then every SAVE_EVERY s
        show = not a.no_progress
        self.bar = tqdm(total=len(jobs), desc="files", unit="file", disable=not show or len(jobs) < 2)
        self.bar.update(sum(r is not None for r in records))
        videos = any(j.src.suffix.lower() in VIDEO_EXTS for j in jobs)
        self.frame_bar = tqdm(desc="frames", unit="frame", disable=not show or not videos, position=1)
        if show and videos:
            self.progress = ray.remote(Progress).options(num_cpus=0).remote()
        if store is not None:
            self._start_identities()
        gpus = 1 if str(cfg.device).startswith("cuda") else 0  # Ray gives each worker its own GPU
        self.worker_cls = ray.remote(FileWorker).options(num_cpus=cc.threads, num_gpus=gpus)

    def _start_identities(self) -> None:
        from safetensors.numpy import load_file

        from ..weights import DEFAULT_ANCHORS
        from .anchors import AnchorSpace
        from .itm import IdentityTrackingModule

        anchors = load_file(str(self.cfg.anchors or DEFAULT_ANCHORS))["anchors"].astype(np.float32)
        self.itm = IdentityTrackingModule(AnchorSpace(anchors), threshold=self.cfg.threshold)  # load and save only
        if self.store.exists():
            self.itm.load(self.store)
        self.identities = self.ray.remote(IdentityActor).options(num_cpus=0).remote(
            anchors, self.cfg.margin, self.cfg.seed, self.cfg.threshold, *self.itm.pairs())

    def _spawn(self) -> None:
        w = self.worker_cls.remote(self.cfg, self.cc.threads, self.identities, self.progress)
        self.starting[w.ready.remote()] = w

    def go(self, todo: list[int]) -> None:
        ray = self.ray
        if not todo:
            return  # all skipped or failed already: no worker needs to load a model
        cpus = int(ray.cluster_resources().get("CPU", 0))
        n = min(self.cc.workers or max(1, cpus // self.cc.threads), len(todo))
        if n * self.cc.threads > cpus:
            print(f"fiva: warning: the cluster has {cpus} CPU(s); {n} worker(s) of {self.cc.threads} thread(s) start as "
                  f"CPUs become free", file=sys.stderr)
        for _ in range(n):
            self._spawn()
        queue = deque(todo)
        while queue or self.running:
            while self.idle and queue:
                i, w = queue.popleft(), self.idle.pop()
                ref = w.run.remote(i, self.remote_jobs[i], self.a.overwrite, self.options, self.store is not None)
                self.running[ref] = (w, i)
            if not self.running and not self.starting:
                for i in queue:
                    self._finish(i, self._failed(i, "no worker left to process it"))
                return
            done, _ = ray.wait(list(self.running) + list(self.starting), num_returns=1, timeout=0.5)
            self._update_frames()
            for ref in done:
                if ref in self.starting:
                    self._started(ref)
                else:
                    self._returned(ref, queue)
            if self.unsaved and time.monotonic() - self.saved > SAVE_EVERY:
                self._save()

    def _started(self, ref) -> None:
        w = self.starting.pop(ref)
        try:
            error = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:  # died while loading: others may still start
            if not (self.idle or self.running or self.starting):
                raise ValueError(f"no worker could start ({_one_line(e)})") from None
            return
        if error:
            raise ValueError(error)  # bad settings: every worker would say the same
        self.idle.append(w)

    def _returned(self, ref, queue: deque) -> None:
        ray = self.ray
        w, i = self.running.pop(ref)
        try:
            rec = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # the worker died mid-file
            self.attempts[i] += 1
            _remove_temporary(self.remote_jobs[i].dst)
            self.frame_bar.update(-self.frames.pop(i, 0))
            why = _one_line(e)
            if self.attempts[i] < MAX_ATTEMPTS:
                print(f"fiva: warning: {self.jobs[i].src}: its worker died ({why}); trying again on another",
                      file=sys.stderr)
                queue.appendleft(i)
            else:
                self._finish(i, self._failed(i, f"{MAX_ATTEMPTS} workers died processing it (last: {why})"), tries=MAX_ATTEMPTS)
            self._spawn()  # a fresh worker in its place
            return
        except ray.exceptions.RayTaskError as e:  # an error process_file does not expect: this file fails
            rec = self._failed(i, _one_line(e.cause if getattr(e, "cause", None) else e))
        self.idle.append(w)
        self.frames.pop(i, None)
        self._finish(i, rec, tries=self.attempts[i] + 1)

    def _failed(self, i: int, why: str) -> dict:
        return {"input": "", "output": "", "status": "failed", "error": f"{self.jobs[i].src}: {why}", "faces": {},
                "seconds": 0.0}

    def _finish(self, i: int, rec: dict, tries: int = 0) -> None:
        """Record a file's outcome in the user's own path spelling; print its error if it failed."""
        local, remote = self.jobs[i], self.remote_jobs[i]
        rec["input"], rec["output"] = str(local.src), str(local.dst)
        if "error" in rec:
            rec["error"] = rec["error"].replace(str(remote.src), str(local.src)).replace(str(remote.dst), str(local.dst))
            print(f"fiva: error: {rec['error']}", file=sys.stderr)
        if tries > 1:
            rec["attempts"] = tries  # workers that took it on (the others died)
        self.records[i] = rec
        self.unsaved |= self.store is not None and rec["status"] == "done"
        self.bar.update()

    def _update_frames(self) -> None:
        if self.progress is None:
            return
        for i, n in self.ray.get(self.progress.take.remote()).items():
            self.frames[i] += n
            self.frame_bar.update(n)

    def _save(self, timeout: float | None = None) -> None:
        self.itm.set_pairs(*self.ray.get(self.identities.pairs.remote(), timeout=timeout))
        self.itm.save(self.store)
        self.saved, self.unsaved = time.monotonic(), False

    def close(self) -> None:
        """End of run or interruption: save the store, stop the workers, remove what they left
        half-written. Best effort once Ray itself is gone (a signal to the whole process group
        reaches a local Ray's processes too): then the store holds the last periodic save."""
        ray = self.ray
        in_flight = [i for _, i in self.running.values()]
        try:
            if self.identities is not None:
                self._save(timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure of a dead cluster; the run is ending anyway
            print(f"fiva: warning: {self.store}: the identity actor is gone ({_one_line(e)}); the store keeps the "
                  f"identities of its last save", file=sys.stderr)
        try:
            for w in [w for w, _ in self.running.values()] + self.idle + list(self.starting.values()):
                ray.kill(w)
            if self.running:
                ray.wait(list(self.running), num_returns=len(self.running), timeout=10)  # until they are gone
            for actor in (self.identities, self.progress):
                if actor is not None:
                    ray.kill(actor)
        except Exception:  # noqa: BLE001 - Ray is gone, and its workers with it
            pass
        finally:
            for i in in_flight:
                _remove_temporary(self.remote_jobs[i].dst)
            self.frame_bar.close()
            self.bar.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _absolute(p):
    return None if p is None else type(p)(os.path.abspath(p)) if isinstance(p, Path) else os.path.abspath(p)


def _remove_temporary(dst: Path) -> None:
    """Delete the temporary files a killed writer of `dst` left (runner.py and video.py name them
    .STEM.tmp.EXT and .STEM.HEX.tmp.EXT beside it)."""
    stem, ext = glob.escape(dst.stem), glob.escape(dst.suffix)
    for pattern in (f".{stem}.tmp{ext}", f".{stem}.*.tmp{ext}"):
        for f in dst.parent.glob(pattern):
            f.unlink(missing_ok=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
