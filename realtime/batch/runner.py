"""The driver of a batch run: plan from the manifest, hand files to Ray actors, record
each answer, write the tables.

    report = run_batch(inputs, BatchOptions(out=..., worker=WorkerOptions(analyzer=...)), console)

Distribution is Ray's: `FileWorker` actors (worker.py), one per `threads` CPUs (and
`gpus` GPUs), placed with the SPREAD strategy, fed by `ray.util.ActorPool`; an actor
whose process dies is restarted by Ray and its file retried once. A file longer than
one chunk (`chunk_seconds`, by default `chunks.default_chunk_seconds` of the run's video
and workers) is cut into chunk jobs that any actor takes; when all of them are back the
driver merges them and writes the file's outputs (long_files.py). With `video` every
file runs whole (one annotated video is written by one worker). A local Ray is
started for the run unless an address is given (`auto`, `host:port`, `ray://host:10001`).
A stop signal (Interrupted, a KeyboardInterrupt) ends the run between answers: files in
flight stay `pending`, the tables are written from what is done, and the report says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import UserError
from ..shutdown import STOP_SIGNALS
from . import layout
from .chunks import DEFAULT_OVERLAP_S, default_chunk_seconds
from .long_files import ChunkedFile
from .manifest import FileEntry, Manifest, file_key, sha256_of
from .progress import BatchProgress
from .results import BatchReport, PersonRow, people_of, write_people_tables
from .worker import (
    ChunkJob,
    ChunkJobResult,
    FileJob,
    FileResult,
    FileWorker,
    WorkerOptions,
)

log = logging.getLogger(__name__)
POLL_S = 0.5  # how long the driver waits for an answer before looking at signals again
LOST = "the worker process died on this file (twice)"


@dataclass(frozen=True)
class BatchOptions:
    out: Path
    worker: WorkerOptions
    address: str | None = None  # None: start a local Ray for the run
    workers: int | None = None  # None: as many as the CPUs (and GPUs) allow
    gpus_per_worker: float = 0.0
    progress: bool = True
    chunk_seconds: float | None = None  # None: chunks.default_chunk_seconds of the run's video and workers
    overlap_seconds: float = DEFAULT_OVERLAP_S


@dataclass(frozen=True)
class Plan:
    jobs: tuple[FileEntry, ...]  # to process now, pending in the manifest
    skipped: int  # done earlier, unchanged
    seconds: dict[str, float]  # expected video seconds per job, for the ETA


@dataclass(frozen=True)
class Tasks:
    """The plan as jobs for the actors: whole files, and the chunks of long ones."""

    jobs: tuple[FileJob | ChunkJob, ...]
    long_files: dict[str, ChunkedFile]  # by path; their state changes as chunks come back


def run_batch(inputs: Sequence[Path], options: BatchOptions, console: Console) -> BatchReport:
    started = time.perf_counter()
    layout.create_out_dir(options.out)
    manifest = Manifest.load(options.out / layout.MANIFEST)
    plan = make_plan(inputs, manifest, sha256_of(options.worker.analyzer.model_path))
    manifest.save()  # from here the folder is ours, and the pending files are on record
    results: dict[str, FileResult] = {}
    interrupted = False
    if plan.jobs:
        try:
            with ray_session(options):
                tasks = make_tasks(plan, options, workers_available(options))
                with actors(options, min(workers_available(options), len(tasks.jobs))) as workers:
                    process(plan, tasks, manifest, workers, options, console, results)
        except KeyboardInterrupt:
            interrupted = True
    people = write_people_tables(options.out, people_rows(manifest, results, options.out))
    return report(plan, results, people, interrupted, time.perf_counter() - started)


def make_plan(inputs: Sequence[Path], manifest: Manifest, model_sha256: str) -> Plan:
    jobs, seconds, skipped = [], {}, 0
    for path in inputs:
        try:
            key = file_key(path, model_sha256)
        except OSError as exc:
            raise UserError(f"cannot read input {path}: {exc.strerror or exc}") from None
        if manifest.is_done(key):
            skipped += 1
            continue
        jobs.append(manifest.plan(key, f"{layout.FILES_DIR}/{layout.output_folder_name(path)}"))
        seconds[key.path] = probe_seconds(path)
    return Plan(tuple(jobs), skipped, seconds)


def probe_seconds(path: Path) -> float:
    """The video's length from its header (no decoding), 0 when it says nothing usable."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        frames, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return frames / fps if frames > 0 and 0 < fps < 1000 else 0.0


def make_tasks(plan: Plan, options: BatchOptions, workers: int) -> Tasks:
    """Each file a job, or, when longer than one chunk, one job per chunk (never with --video)."""
    chunk_s = options.chunk_seconds or default_chunk_seconds(sum(plan.seconds.values()), workers)
    jobs: list[FileJob | ChunkJob] = []
    long_files: dict[str, ChunkedFile] = {}
    for entry in plan.jobs:
        output = options.out / entry.output
        long = None
        if not options.worker.video and plan.seconds.get(entry.path, 0.0) > chunk_s:
            long = ChunkedFile.plan(entry.path, output, chunk_s, options.overlap_seconds)
        if long is None:
            jobs.append(FileJob(entry.path, str(output)))
        else:
            long_files[entry.path] = long
            jobs.extend(long.jobs())
    return Tasks(tuple(jobs), long_files)


def process(plan: Plan, tasks: Tasks, manifest: Manifest, workers: list[Any], options: BatchOptions, console: Console, results: dict[str, FileResult]) -> None:
    """Every job through the actor pool; each file's answer recorded in the manifest as it comes."""
    import ray
    from ray.util import ActorPool

    pool = ActorPool(workers)
    for job in tasks.jobs:
        pool.submit(lambda actor, j: actor.process_chunk.remote(j) if isinstance(j, ChunkJob) else actor.process.remote(j), job)
    smoothing = options.worker.analyzer.smoothing
    stopped: set[str] = set()  # files a worker's stop signal left pending
    with BatchProgress(console, options.progress, len(plan.jobs), sum(plan.seconds.values())) as shown:
        while pool.has_next():
            try:
                answer: FileResult | ChunkJobResult = pool.get_next_unordered(timeout=POLL_S)
            except TimeoutError:
                continue
            except ray.exceptions.RayError as exc:  # an actor lost for good: its file is found below
                log.warning("a worker failed: %s", str(exc).strip().splitlines()[-1][:200])
                continue
            if answer.status == "interrupted":
                stopped.add(answer.path)  # its file stays pending (all its chunks rerun next time)
            if isinstance(answer, ChunkJobResult):
                long = tasks.long_files[answer.path]
                shown.advance(long.owned_seconds(answer.index) if answer.status != "interrupted" else 0.0, files=0)
                result = long.answer(answer, smoothing)
            else:
                result = answer if answer.status != "interrupted" else None
                shown.advance(plan.seconds.get(answer.path, 0.0) if result else 0.0, files=0)
            if result is None:
                continue
            results[result.path] = result
            record(manifest, result, chunks(tasks, result.path))
            manifest.save()
            shown.advance(0.0, files=1)
    for entry in plan.jobs:  # answered by no one: the actor died on it even after Ray's retry
        if entry.path not in results and entry.path not in stopped:
            results[entry.path] = FileResult(entry.path, "failed", error=LOST)
            record(manifest, results[entry.path], chunks(tasks, entry.path))
    manifest.save()


def chunks(tasks: Tasks, path: str) -> int:
    long = tasks.long_files.get(path)
    return len(long.chunks) if long is not None else 1


def record(manifest: Manifest, result: FileResult, chunks: int = 1) -> FileEntry:
    return manifest.finished(
        result.path, status=result.status, frames=result.frames, people=len(result.people),
        video_seconds=round(result.video_seconds, 3), processing_seconds=round(result.processing_seconds, 3),
        error=result.error, finished_at=round(time.time(), 3), node=result.node, chunks=chunks,
    )


def people_rows(manifest: Manifest, results: dict[str, FileResult], out: Path) -> Iterator[PersonRow]:
    """Everyone in every file done: this run's from the answers, earlier ones' from their summaries."""
    for entry in manifest.done():
        answer = results.get(entry.path)
        if answer is not None:
            yield from (PersonRow.from_event(entry.path, e) for e in answer.people)
        else:
            yield from people_of(entry, out)


def report(plan: Plan, results: dict[str, FileResult], people: int, interrupted: bool, wall: float) -> BatchReport:
    done = [r for r in results.values() if r.status == "done"]
    failed = tuple((r.path, r.error or "failed") for r in results.values() if r.status == "failed")
    return BatchReport(
        done=len(done), failed=len(failed), skipped=plan.skipped, unfinished=len(plan.jobs) - len(results),
        video_seconds=sum(r.video_seconds for r in done), wall_seconds=wall, people=people, interrupted=interrupted,
        failures=failed,
    )


@contextmanager
def ray_session(options: BatchOptions) -> Iterator[None]:
    """Ray connected (a local one started if no address), let go after."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        connect(options)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def actors(options: BatchOptions, count: int) -> Iterator[list[Any]]:
    """`count` actors up, killed after."""
    import ray

    workers = start_workers(options, count)
    try:
        yield workers
    finally:
        for worker in workers:
            ray.kill(worker)


def workers_available(options: BatchOptions) -> int:
    """The actors this run may have: the request, or as many as the cluster holds."""
    import ray

    return worker_count(options, ray.cluster_resources(), jobs=1 << 30)


def connect(options: BatchOptions) -> None:
    with signal_handlers_kept():
        _init_ray(options)


@contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Ray's core worker installs its own SIGTERM handler (it logs a stack and exits 1): the
    command's handlers (realtime.shutdown: an orderly stop, exit 130) are put back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


def _init_ray(options: BatchOptions) -> None:
    import ray

    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if options.address is None:
            threads = options.worker.threads
            cpus = max(os.cpu_count() or 1, (options.workers or 1) * threads)
            ray.init(num_cpus=cpus, **quiet)
        else:
            ray.init(address=options.address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot connect to Ray at {options.address or 'a new local instance'}: {str(exc).strip().splitlines()[0]}") from None


def worker_count(options: BatchOptions, resources: dict[str, float], jobs: int) -> int:
    """How many actors: the request, or as many as the cluster's CPUs (and GPUs) hold; never
    more than the jobs. A request the cluster cannot hold would wait forever: refused."""
    threads, gpus = options.worker.threads, options.gpus_per_worker
    fits = int(resources.get("CPU", 0) // threads)
    if gpus > 0:
        fits = min(fits, int(resources.get("GPU", 0) // gpus))
    if fits < 1 or (options.workers or 0) > fits:
        wanted = options.workers or 1
        need = f"{wanted * threads} CPUs" + (f" and {wanted * gpus:g} GPUs" if gpus > 0 else "")
        have = f"{resources.get('CPU', 0):g} CPUs" + (f" and {resources.get('GPU', 0):g} GPUs" if gpus > 0 else "")
        raise UserError(f"{wanted} workers need {need}; the Ray cluster has {have}")
    return max(1, min(options.workers or fits, jobs))


def start_workers(options: BatchOptions, count: int) -> list[Any]:
    """`count` actors, each with its detector and model loaded (a load failure is a UserError)."""
    import ray

    actor = ray.remote(FileWorker).options(
        num_cpus=options.worker.threads, num_gpus=options.gpus_per_worker, scheduling_strategy="SPREAD",
        max_restarts=-1, max_task_retries=1,
    )
    workers = [actor.remote(options.worker) for _ in range(count)]
    try:
        ray.get([w.pid.remote() for w in workers])
    except ray.exceptions.RayError as exc:
        for w in workers:
            ray.kill(w)
        raise UserError(f"a worker could not start: {creation_error(exc)}") from None
    return workers


def creation_error(exc: BaseException) -> str:
    """The one line that says why an actor's constructor failed, out of Ray's long text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line and not line.startswith(("ray.", "File ")):
            return line.split("Error: ", 1)[-1][:300] if line.startswith(("realtime.", "ModelError", "UserError", "SourceError")) else line[:300]
    return lines[-1][:300] if lines else type(exc).__name__
