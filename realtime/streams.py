"""Several streams in one process: one detector engine and one model shared by all.

    feeds (a thread each) ─► tick: every stream with a frame ready ─► analyzer.detection_plan
    ─► ONE detector run for all their passes ─► analyzer.begin_detected (track, choose faces)
    ─► ONE model batch for all their crops ─► analyzer.complete ─► sinks

Each stream keeps its own analyzer (tracker, smoothing, people), sinks and summary; the
detector network and the age/gender model are loaded once (`SharedEngines`). A tick
takes at most one frame per stream, so when the machine cannot keep up a live stream,
whose feed keeps only its newest frame, drops frames at the same rate as every other
(never a queue that grows); a file stream waits for nothing but its own decoder and never
drops. A stream whose source fails or is lost, or whose output fails, is finished alone
(its people handed over, its sinks closed, its summary recording the error) while the
others go on. The run ends when every stream has ended, on a stop signal, or when the
window is closed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import supervision as sv
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .analyzer import Analyzer, AnalyzerOptions, FrameResult, PendingFrame
from .detection import DetectorOptions, FaceDetector, create_engine, warn_on_convention_mismatch
from .errors import UserError
from .model import AgeGenderModel, Predictions
from .overlay import Overlay
from .readahead import READ_AHEAD
from .runner import RunState, build_summary, close_sinks, console_logging, describe, finish_people
from .shutdown import stop_signals
from .sinks import ShownFrame, Sink, StopRun
from .sources import Frame, FrameSource
from .summary import RunSummary
from .tiling import DetectionPlan, TiledDetector, detect_all

# how long a tick waits for any stream's next frame before looking at the signals again
IDLE_WAIT_S = 0.05


class Feed:
    """One stream's frames, read on a thread of its own.

    A file's frames are all kept, in order, at most `depth` ahead of the analysis (the
    decoder waits); a live source's newest frame replaces one not yet taken, and the
    replaced frame is counted in the source's `stats.dropped`. `take` never blocks.
    """

    def __init__(self, source: FrameSource, wake: threading.Event, depth: int = READ_AHEAD) -> None:
        self.source = source
        self.live = source.info.live
        self._wake = wake
        self._depth = 1 if self.live else depth
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._read, name=f"feed-{source.info.name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self.source:
                if not self._put(frame):
                    return
        except BaseException as exc:  # raised in the consumer by `take`
            self._error = exc
        finally:
            with self._cond:
                self._done = True
            self._wake.set()

    def _put(self, frame: Frame) -> bool:
        with self._cond:
            if self.live and self._frames:
                self._frames.popleft()
                # this thread is the live source's only consumer, so its counter is ours to add to
                self.source.stats.dropped += 1  # type: ignore[attr-defined]
            while len(self._frames) >= self._depth and not self._stop.is_set():
                self._cond.wait(0.1)
            if self._stop.is_set():
                return False
            self._frames.append(frame)
        self._wake.set()
        return True

    def take(self) -> Frame | None:
        """The next frame if one is ready; None if not yet. Raises the source's error, or
        StopIteration once it has ended and every frame was taken."""
        with self._cond:
            if self._frames:
                frame = self._frames.popleft()
                self._cond.notify_all()
                return frame
            if not self._done:
                return None
        if self._error is not None:
            raise self._error
        raise StopIteration

    def close(self) -> None:
        """Stops the reader; a live source is closed first, which is what unblocks it."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self.live:
            self.source.close()
        self._thread.join(timeout=10)
        if not self.live:
            self.source.close()  # never under a decode in progress on the reader thread


@dataclass
class Stream:
    """One camera of the run: its source, its own analyzer and sinks, its counters."""

    name: str
    source: FrameSource
    analyzer: Analyzer
    sinks: list[Sink]
    max_frames: int | None = None
    state: RunState = field(default_factory=RunState)
    feed: Feed | None = None
    overlay: Overlay | None = None
    opened: list[Sink] = field(default_factory=list)
    summary: RunSummary | None = None  # set when the stream has ended
    failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return self.summary is None


@dataclass(frozen=True)
class StreamsOptions:
    progress: bool = True
    keep_people: bool = True
    # called after each tick that showed frames (the tiled window); raising StopRun ends the run
    after_tick: Callable[[], None] | None = None
    # streams may be split over loop threads, one per detector instance; False where the
    # sinks must all be called from one thread (the window, the kiosk's SQLite store)
    threads: bool = True


@dataclass(frozen=True)
class StreamsSummary:
    """Every stream's summary, and the run's totals."""

    streams: list[tuple[str, RunSummary]]
    wall_seconds: float
    model_batches: int
    faces_inferred: int
    interrupted: bool

    @property
    def frames(self) -> int:
        return sum(s.frames for _, s in self.streams)

    @property
    def aggregate_fps(self) -> float | None:
        return round(self.frames / self.wall_seconds, 2) if self.wall_seconds > 0 else None

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(name, s.error) for name, s in self.streams if s.error is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "streams": [{"name": name, **s.to_dict()} for name, s in self.streams],
            "frames": self.frames,
            "wall_seconds": round(self.wall_seconds, 3),
            "aggregate_fps": self.aggregate_fps,
            "model_batches": self.model_batches,
            "faces_inferred": self.faces_inferred,
            "faces_per_batch": round(self.faces_inferred / self.model_batches, 2) if self.model_batches else None,
            "interrupted": self.interrupted,
            "failed_streams": len(self.failures),
        }


# the detector options that configure the network itself, shared by every stream; the
# rest (tiling, small faces, motion gating) is each stream's own
ENGINE_FIELDS = ("engine", "device", "model", "min_confidence", "model_dir")


class SharedEngines:
    """The detector network and the age/gender model, loaded once for every stream.

    An engine that batches (`detect_batch`: onnx) gets every stream's passes in one run,
    which its own threads spread over the cores. One that takes an image at a time
    (MediaPipe) gets a small pool of instances, one per worker thread: MediaPipe releases
    the GIL while it detects, so two threads detect twice as many frames a second on two
    cores (measured: 161 -> 318 passes/s at 640x480), where one process with one
    detector would leave a core idle.
    """

    def __init__(self, engines: Sequence[FaceDetector], detector: DetectorOptions, model: AgeGenderModel) -> None:
        self.engines, self.detector, self.model = list(engines), detector, model
        self.engine = self.engines[0]
        warn_on_convention_mismatch(self.engine, model.metadata)  # once, not once per stream
        self._pool = ThreadPoolExecutor(len(self.engines), "detect") if len(self.engines) > 1 else None
        self._free: queue.SimpleQueue[FaceDetector] = queue.SimpleQueue()
        for engine in self.engines:
            self._free.put(engine)

    @classmethod
    def create(cls, detector: DetectorOptions, model_path: Any, device: str, streams: int = 1) -> "SharedEngines":
        """Engines for `streams` streams: one that batches, else one per core (at most one per stream)."""
        model = AgeGenderModel.create(model_path, device)
        first = create_engine(detector)
        engines = [first]
        try:
            if not hasattr(first, "detect_batch"):
                engines += [create_engine(detector) for _ in range(min(streams, os.cpu_count() or 1) - 1)]
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        return cls(engines, detector, model)

    def analyzer(self, options: AnalyzerOptions) -> Analyzer:
        """A stream's analyzer on the shared engine and model, with its own tiling options."""
        differing = [f for f in ENGINE_FIELDS if getattr(options.detector, f) != getattr(self.detector, f)]
        if differing:
            raise UserError(f"every stream shares one detector: {', '.join(differing)} cannot differ between streams")
        return Analyzer(options, TiledDetector(self.engine, options.detector, owns_engine=False), self.model)

    def detect(self, groups: Sequence[Sequence[np.ndarray]]) -> Iterator[tuple[int, list[sv.Detections]]]:
        """Each group's detections (a group: one stream's frame's passes) as (index, found),
        in the order they finish, so that the caller works on one stream's faces while the
        detector threads are still on the others'."""
        if self._pool is None or hasattr(self.engine, "detect_batch") or len(groups) < 2:
            found = detect_all(self.engine, [image for group in groups for image in group])
            yield from enumerate(_split(found, [len(g) for g in groups]))
            return
        jobs = {self._pool.submit(self._detect_with_free_engine, group): i for i, group in enumerate(groups)}
        for job in as_completed(jobs):
            yield jobs[job], job.result()

    def _detect_with_free_engine(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        # an engine instance serves one thread at a time; the pool has as many threads as instances
        engine = self._free.get()
        try:
            return detect_all(engine, images)
        finally:
            self._free.put(engine)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for engine in self.engines:
            engine.close()

    def __enter__(self) -> "SharedEngines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split(items: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    out, start = [], 0
    for size in sizes:
        out.append(list(items[start : start + size]))
        start += size
    return out


def run_streams(
    streams: Sequence[Stream], engines: SharedEngines, options: StreamsOptions = StreamsOptions(), console: Console | None = None
) -> StreamsSummary:
    """Every stream until each has ended, a stop signal, or StopRun from `after_tick`."""
    console = console or Console(stderr=True)
    loops = _loops(list(streams), engines, options)
    started = time.perf_counter()
    fatal: BaseException | None = None
    interrupted = False
    with stop_signals() as shutdown, console_logging(console):
        try:
            for loop in loops:
                for stream in loop.streams:
                    _open(stream, loop.wake)
            with _progress(streams, console, options.progress):
                if len(loops) == 1:
                    loops[0].run(shutdown.frame)
                else:
                    _run_threads(loops)
        except KeyboardInterrupt:
            interrupted = True
        except StopRun:  # the window was closed
            pass
        except BaseException as exc:  # the shared model failed: every stream ends with it
            fatal = exc
        finally:
            for loop in loops:
                loop.stop.set()
            for loop in loops:
                if loop.thread is not None:
                    loop.done.wait()
            fatal = fatal or next((loop.fatal for loop in loops if loop.fatal is not None), None)
            try:
                for stream in streams:
                    if stream.running:
                        _end(stream, fatal, interrupted, options)
            finally:
                for loop in loops:
                    loop.release.set()
                    if loop.thread is not None:
                        loop.thread.join()
    if fatal is not None:
        raise fatal
    return StreamsSummary(
        [(s.name, s.summary) for s in streams if s.summary is not None],
        time.perf_counter() - started,
        sum(loop.batches for loop in loops),
        sum(loop.faces for loop in loops),
        interrupted,
    )


def _loops(streams: list[Stream], engines: SharedEngines, options: StreamsOptions) -> list["_Loop"]:
    """One loop per detector instance, each with its share of the streams, when nothing
    needs one thread (the window, the kiosk's store); else one loop for all."""
    count = min(len(engines.engines), len(streams)) if options.threads else 1
    if count <= 1:
        return [_Loop(streams, engines, options, None)]
    return [_Loop(streams[k::count], engines, options, engines.engines[k]) for k in range(count)]


def _run_threads(loops: Sequence["_Loop"]) -> None:
    """Each loop on a thread of its own; this thread waits, so that a stop signal reaches it."""
    for loop in loops:
        loop.thread = threading.Thread(target=loop.run_guarded, name="streams", daemon=True)
        loop.thread.start()
    while not all(loop.done.is_set() for loop in loops):
        for loop in loops:
            loop.done.wait(timeout=IDLE_WAIT_S)
            if loop.fatal is not None:
                return


def _open(stream: Stream, wake: threading.Event) -> None:
    info = stream.source.info
    stream.overlay = Overlay.for_frame(info.width, info.height)
    for sink in stream.sinks:
        sink.open(info)
        stream.opened.append(sink)
    stream.feed = Feed(stream.source, wake)


class _Loop:
    """The ticks of some streams: one frame per ready stream; one detector run (batched
    where the engine can: `tiling.detect_all`) and one model batch for them all.

    With `engine` the loop detects with that instance alone (it runs on a thread of its
    own, beside the other loops); without, with all of `engines` (the only loop).
    """

    def __init__(self, streams: list[Stream], engines: SharedEngines, options: StreamsOptions, engine: FaceDetector | None) -> None:
        self.streams, self.engines, self.options, self.engine = streams, engines, options, engine
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.done = threading.Event()  # run_guarded's run is over
        self.release = threading.Event()  # its thread may end
        self.thread: threading.Thread | None = None
        self.fatal: BaseException | None = None
        self.batches = 0
        self.faces = 0

    def active(self) -> bool:
        return any(s.running for s in self.streams)

    def run(self, frame: Callable[[], Any] = contextlib.nullcontext) -> None:
        """Ticks until every stream has ended or `stop` is set; `frame()` wraps each tick
        (the stop signals' grace for work in progress)."""
        while self.active() and not self.stop.is_set():
            with frame():
                if not self.tick():
                    self.wake.wait(IDLE_WAIT_S)

    def run_guarded(self) -> None:
        """`run` on a loop thread: a failure is kept for the main thread to raise.

        The thread then waits for `release`, given once every stream's outputs are
        closed: a thread that had run MediaPipe and OpenCV ending while another thread
        opened a video (the check that a finished video plays) aborted the process
        (std::terminate) in about 1 of 7 stops under load.
        """
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.fatal = exc
        finally:
            self.done.set()
            self.release.wait()

    def _detect(self, groups: list[list[np.ndarray]]) -> Iterator[tuple[int, list[sv.Detections]]]:
        if self.engine is None:
            return self.engines.detect(groups)
        found = detect_all(self.engine, [image for group in groups for image in group])
        return enumerate(_split(found, [len(g) for g in groups]))

    def tick(self) -> bool:
        """Whether any stream had a frame."""
        self.wake.clear()  # before looking, so a frame arriving meanwhile still wakes the wait
        ready = [(s, f, plan) for s in self.streams if s.running for f, plan in [self._plan(s)] if f is not None]
        if not ready:
            return False
        started = time.perf_counter()
        taken = []
        for i, its in self._detect([plan.images if plan is not None else [] for _, _, plan in ready]):
            stream, frame, plan = ready[i]
            detections = plan.finish(its) if plan is not None else None
            pending = self._begin(stream, frame, detections, time.perf_counter() - started)
            if pending is not None:
                taken.append((stream, frame, pending))
        self._infer(taken)
        if self.options.after_tick is not None:
            self.options.after_tick()
        return True

    def _infer(self, taken: list[tuple[Stream, Frame, PendingFrame]]) -> None:
        """One model run for every stream's crops, each stream's share to its `complete`."""
        crops = [p.crops for _, _, p in taken if len(p.crops)]
        started = time.perf_counter()
        predictions = self.engines.model.predict(np.concatenate(crops) if crops else [])
        seconds = time.perf_counter() - started
        if crops:
            self.batches += 1
            self.faces += len(predictions)
        offset = 0
        for stream, frame, pending in taken:
            part = predictions.part(offset, offset + len(pending.crops))
            offset += len(pending.crops)
            self._complete(stream, frame, pending, part, seconds)

    def _plan(self, stream: Stream) -> tuple[Frame | None, DetectionPlan | None]:
        """The stream's next frame, if one is ready, and the detector passes it needs."""
        assert stream.feed is not None
        try:
            frame = stream.feed.take()
            if frame is None:
                return None, None
            return frame, stream.analyzer.detection_plan(frame.image)
        except StopIteration:
            _end(stream, None, False, self.options)
        except Exception as exc:  # noqa: BLE001 - a failing source ends its stream only
            _end(stream, exc, False, self.options)
        return None, None

    def _begin(self, stream: Stream, frame: Frame, detections: sv.Detections | None, seconds: float) -> PendingFrame | None:
        try:
            return stream.analyzer.begin_detected(frame.image, frame.index, frame.time, detections, seconds)
        except Exception as exc:  # noqa: BLE001
            _end(stream, exc, False, self.options)
            return None

    def _complete(self, stream: Stream, frame: Frame, pending: PendingFrame, part: Predictions, seconds: float) -> None:
        try:
            result = stream.analyzer.complete(pending, part, seconds)
            _deliver(stream, frame, result, self.options)
        except StopRun:
            raise
        except Exception as exc:  # noqa: BLE001 - an output failing ends its stream only
            _end(stream, exc, False, self.options)
            return
        if stream.max_frames is not None and stream.state.frames >= stream.max_frames:
            _end(stream, None, False, self.options)


def _deliver(stream: Stream, frame: Frame, result: FrameResult, options: StreamsOptions) -> None:
    state = stream.state
    state.frames += 1
    state.last_time = frame.time
    state.faces_now = len(result.faces)
    finish_people(result.finished, False, state, options.keep_people, stream.opened)
    assert stream.overlay is not None
    shown = ShownFrame(frame, result, stream.overlay, state.fps())
    for sink in stream.opened:
        sink.on_frame(shown)


def _end(stream: Stream, failure: BaseException | None, interrupted: bool, options: StreamsOptions) -> None:
    """The stream's people handed over, its feed stopped, its sinks closed with its summary."""
    stream.state.interrupted = interrupted
    if stream.feed is not None:
        stream.feed.close()
    try:
        finish_people(stream.analyzer.finish(), True, stream.state, options.keep_people, stream.opened)
    except Exception as exc:  # noqa: BLE001 - reported unless the stream already failed
        failure = failure or exc
    summary = build_summary(stream.source, stream.analyzer, stream.state, failure)
    summary, failure = close_sinks(stream.opened, summary, failure)
    stream.summary, stream.failure = summary, failure


class _progress:
    """A live table, one row per stream: frames, fps, drops, faces now, people, state."""

    def __init__(self, streams: Sequence[Stream], console: Console, shown: bool) -> None:
        self.streams, self.console, self.shown = streams, console, shown
        self._live: Live | None = None

    def __enter__(self) -> None:
        if self.shown:
            self._live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()

    def __rich__(self) -> Table:
        return streams_table(self.streams, "streams")

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


def streams_table(streams: Sequence[Stream], title: str) -> Table:
    table = Table(title=title)
    for column in ("stream", "frames", "fps", "dropped", "faces now", "people", "state"):
        table.add_column(column, justify="left" if column in ("stream", "state") else "right")
    for s in streams:
        stats = getattr(s.source, "stats", None)
        dropped = str(stats.dropped) if stats is not None else "-"
        if s.summary is not None:
            state = f"failed: {s.summary.error}" if s.summary.error else "ended"
        else:
            state = (stats.status if stats is not None else None) or "running"
        table.add_row(s.name, str(s.state.frames), f"{s.state.fps():.1f}", dropped, str(s.state.faces_now), str(s.state.people_count), state)
    return table


def exit_code(summary: StreamsSummary, streams: Sequence[Stream]) -> int:
    """0 when every stream ended well; else the first failed stream's code (3 lost, 2 bad
    input or output, 1 unexpected); 130 when stopped by a signal."""
    if summary.interrupted:
        return 130
    for stream in streams:
        if stream.failure is not None:
            return stream.failure.exit_code if isinstance(stream.failure, UserError) else 1
    return 0


__all__ = ["Feed", "SharedEngines", "Stream", "StreamsOptions", "StreamsSummary", "describe", "exit_code", "run_streams", "streams_table"]
