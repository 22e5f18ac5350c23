"""One batch worker: the detector and the model loaded once, then file after file.

`FileWorker` is a plain class; the driver (runner.py) makes it a Ray actor. Each file is
decoded here, in the worker, and its outputs are written here, straight to --out (which
must therefore be on storage every node sees): what travels back through Ray is only a
`FileResult`, a few hundred bytes plus the people list. Frames never enter Ray's object
store.

A chunk of a long file (chunks.py) is a job of its own (`process_chunk`): the worker
decodes the chunk's frames and answers a `ChunkJobResult`, the chunk's tracks and their
boxes in the shared frames (no images); the driver merges a file's chunks and writes
its outputs.

Threads: onnxruntime's intra-op threads (the model's session options) and OpenCV's are
set to the worker's share of the node's cores, so that workers x threads fits the node
instead of every worker spreading over every core.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..analyzer import Analyzer, AnalyzerOptions
from ..summary import ModelInfo, RunSummary
from . import layout
from .chunks import Chunk, ChunkResult

FileStatus = Literal["done", "failed", "interrupted"]


@dataclass(frozen=True)
class WorkerOptions:
    analyzer: AnalyzerOptions  # its fps is replaced by each file's own
    threads: int = 1
    video: bool = False  # also write the annotated video


@dataclass(frozen=True)
class FileJob:
    path: str  # absolute
    output_dir: str  # absolute: --out/files/<name>


@dataclass(frozen=True)
class FileResult:
    path: str
    status: FileStatus
    frames: int = 0
    video_seconds: float = 0.0
    processing_seconds: float = 0.0
    people: tuple[dict[str, Any], ...] = ()  # the events' records
    error: str | None = None  # one line
    node: str | None = None


@dataclass(frozen=True)
class ChunkJob:
    path: str  # absolute
    chunk: Chunk
    chunks: int  # of the file, for the error message
    fps: float  # the file's


@dataclass(frozen=True)
class ChunkJobResult:
    """One chunk's answer: small (the chunk's tracks and shared-frame boxes, no images)."""

    path: str
    index: int  # the chunk's
    status: FileStatus
    result: ChunkResult | None = None  # when done
    run: RunSummary | None = None  # when done: the chunk's own run, without its people
    processing_seconds: float = 0.0
    error: str | None = None  # one line
    node: str | None = None


class FileWorker:
    def __init__(self, options: WorkerOptions) -> None:
        from ..cli import silence_native_logs

        silence_native_logs()  # a fresh process: before OpenCV and MediaPipe load
        import cv2

        from ..detection import create_engine
        from ..model import AgeGenderModel
        from ..streams import SharedEngines

        cv2.setNumThreads(options.threads)
        self.options = options
        a = options.analyzer
        model = AgeGenderModel.create(a.model_path, a.device, threads=options.threads)
        # built here rather than by SharedEngines.create, which cannot set the model's threads
        self.engines = SharedEngines([create_engine(a.detector)], a.detector, model)
        self.node = _node_id()
        self.processed = 0

    def process(self, job: FileJob) -> FileResult:
        """The file's outputs written under `job.output_dir`; never raises for a bad file."""
        started = time.perf_counter()
        try:
            summary = self._run(job)
        except BaseException as exc:  # noqa: BLE001 - one bad file fails alone
            if isinstance(exc, KeyboardInterrupt):
                return FileResult(job.path, "interrupted", node=self.node)
            return FileResult(job.path, "failed", processing_seconds=time.perf_counter() - started, error=_one_line(exc), node=self.node)
        self.processed += 1
        status: FileStatus = "interrupted" if summary.interrupted else "done"
        people = tuple(p.to_event() for p in summary.people)
        return FileResult(job.path, status, summary.frames, summary.duration, time.perf_counter() - started, people, node=self.node)

    def _run(self, job: FileJob) -> Any:
        from rich.console import Console

        from ..runner import RunOptions, run
        from ..sources import VideoFileSource

        _check_input(job.path)
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        outputs = {"events": out / layout.EVENTS, "summary": out / layout.SUMMARY}
        if self.options.video:
            outputs["video"] = out / layout.VIDEO
        with VideoFileSource(Path(job.path)) as source, self._analyzer(source.info.fps) as analyzer:
            return run(source, analyzer, RunOptions(outputs=outputs, progress=False), console=Console(stderr=True))

    def process_chunk(self, job: ChunkJob) -> ChunkJobResult:
        """One chunk of a long file, by a fresh analyzer; never raises for a bad file or range."""
        from rich.console import Console

        from .chunks import process_chunk

        started = time.perf_counter()
        try:
            _check_input(job.path)
            with self._analyzer(job.fps) as analyzer:
                result = process_chunk(analyzer, Path(job.path), job.chunk, console=Console(stderr=True))
                seconds = time.perf_counter() - started
                run = chunk_summary(job, result, analyzer, seconds)
        except BaseException as exc:  # noqa: BLE001 - one bad chunk fails its file alone
            if isinstance(exc, KeyboardInterrupt):
                return ChunkJobResult(job.path, job.chunk.index, "interrupted", node=self.node)
            error = f"chunk {job.chunk.index + 1} of {job.chunks} (frames {job.chunk.start_frame}-{job.chunk.end_frame}): {_one_line(exc)}"
            return ChunkJobResult(job.path, job.chunk.index, "failed", processing_seconds=time.perf_counter() - started, error=error, node=self.node)
        status: FileStatus = "interrupted" if result.interrupted else "done"
        return ChunkJobResult(job.path, job.chunk.index, status, result, run, seconds, node=self.node)

    def _analyzer(self, fps: float) -> Analyzer:
        """A fresh analyzer at the file's frame rate, on the worker's engine and model."""
        return self.engines.analyzer(replace(self.options.analyzer, fps=fps))

    def pid(self) -> int:
        return os.getpid()


def chunk_summary(job: ChunkJob, result: ChunkResult, analyzer: Analyzer, seconds: float) -> RunSummary:
    """The chunk's run as run_camera.py would sum it up, people left out (they are in `result`)."""
    meta = analyzer.model.metadata
    return RunSummary(
        source=job.path, source_kind="file", frames=result.frames, duration=round(result.frames / job.fps, 3),
        processing_seconds=round(seconds, 3), processing_fps=round(result.frames / seconds, 2) if seconds > 0 else None,
        tracks=len(result.people), faces_inferred=analyzer.faces_inferred, execution_providers=list(analyzer.providers),
        model=ModelInfo(file=str(analyzer.model.path), name=meta.name, version=meta.version),
        detector=analyzer.options.detector.model, detect_every=analyzer.detect_every, interrupted=result.interrupted,
    )


def _check_input(path: str) -> None:
    from ..errors import SourceError

    if not Path(path).is_file():
        raise SourceError(f"input not found (removed since the run started?): {path}")


def _one_line(exc: BaseException) -> str:
    from ..errors import UserError

    text = str(exc) if isinstance(exc, UserError) else f"unexpected {type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:300]


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (tests of the class itself)
        return None
