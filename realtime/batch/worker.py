"""One batch worker: the detector and the model loaded once, then file after file.

`FileWorker` is a plain class; the driver (runner.py) makes it a Ray actor. Each file is
decoded here, in the worker, and its outputs are written here, straight to --out (which
must therefore be on storage every node sees): what travels back through Ray is only a
`FileResult`, a few hundred bytes plus the people list. Frames never enter Ray's object
store.

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

from ..analyzer import AnalyzerOptions
from . import layout

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


class FileWorker:
    def __init__(self, options: WorkerOptions) -> None:
        from ..cli import silence_native_logs

        silence_native_logs()  # a fresh process: before OpenCV and MediaPipe load
        import cv2

        from ..detection import create_engine, warn_on_convention_mismatch
        from ..model import AgeGenderModel

        cv2.setNumThreads(options.threads)
        self.options = options
        a = options.analyzer
        self.model = AgeGenderModel.create(a.model_path, a.device, threads=options.threads)
        self.engine = create_engine(a.detector)
        warn_on_convention_mismatch(self.engine, self.model.metadata)
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

        from ..analyzer import Analyzer
        from ..errors import SourceError
        from ..runner import RunOptions, run
        from ..sources import VideoFileSource
        from ..tiling import TiledDetector

        if not Path(job.path).is_file():
            raise SourceError(f"input not found (removed since the run started?): {job.path}")
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        outputs = {"events": out / layout.EVENTS, "summary": out / layout.SUMMARY}
        if self.options.video:
            outputs["video"] = out / layout.VIDEO
        with VideoFileSource(Path(job.path)) as source:
            options = replace(self.options.analyzer, fps=source.info.fps)
            with Analyzer(options, TiledDetector(self.engine, options.detector, owns_engine=False), self.model) as analyzer:
                return run(source, analyzer, RunOptions(outputs=outputs, progress=False), console=Console(stderr=True))

    def pid(self) -> int:
        return os.getpid()


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
