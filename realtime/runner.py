"""Pumps frames from a source through an analyzer into the outputs.

This is the I/O edge shared by run_camera.py and the kiosk: it opens every sink before
the first frame, shows progress, and guarantees that however the run ends (end of file,
--max-frames, Ctrl-C, SIGTERM, an error) the open tracks are closed into events, the
video is finalised so it plays, and the summary is written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .analyzer import Analyzer, FaceResult, FrameResult, TrackSummary
from . import display
from .errors import OutputError, UserError
from .overlay import Overlay
from .sinks import JsonLinesSink, VideoSink, check_writable, write_json_atomic
from .shutdown import Shutdown, stop_signals
from .sources import Frame, FrameSource, LiveSource

# frames decoded ahead of the analyzer: enough to ride out one slow frame (a full scan,
# a batch of new faces) without holding many decoded 4K frames in memory
READ_AHEAD = 4


@dataclass(frozen=True)
class RunOptions:
    output: Path | None = None
    events: Path | None = None
    frames: Path | None = None
    summary: Path | None = None
    display: bool = False
    max_frames: int | None = None
    progress: bool = True
    # False for unattended runs of days (the kiosk): people are counted and passed to
    # the events sink but not kept for the summary, so memory stays flat
    keep_people: bool = True


@dataclass
class RunState:
    frames: int = 0
    people: list[TrackSummary] = field(default_factory=list)
    people_count: int = 0
    interrupted: bool = False
    window_closed: bool = False
    started: float = field(default_factory=time.perf_counter)
    last_time: float = 0.0
    faces_now: int = 0


def face_record(face: FaceResult) -> dict[str, Any]:
    return {
        "track_id": face.track_id,
        "box": [round(v, 1) for v in face.box],
        "age": face.age,
        "age_std": face.age_std,
        "gender": face.gender,
        "gender_confidence": face.gender_confidence,
    }


def frame_record(result: FrameResult) -> dict[str, Any]:
    return {"frame": result.frame_index, "time": round(result.time, 3), "faces": [face_record(f) for f in result.faces]}


def people_table(people: list[TrackSummary]) -> Table:
    table = Table(title=f"{len(people)} people")
    for column in ("track", "seen", "frames", "inferred", "age", "gender"):
        table.add_column(column, justify="right" if column not in ("gender",) else "left")
    for p in people:
        age = f"{p.age:.0f} ± {p.age_std:.0f}" if p.age is not None and p.age_std is not None else "-"
        gender = f"{p.gender} ({p.gender_confidence:.0%})" if p.gender and p.gender_confidence else "-"
        span = f"{p.first_time:.1f}-{p.last_time:.1f}s"
        table.add_row(str(p.track_id), span, str(p.frames_seen), str(p.frames_inferred), age, gender)
    return table


class ReadAhead:
    """Frames decoded on a thread of their own, up to `depth` ahead of the consumer.

    Decoding a 1080p frame costs about as much CPU as finding the faces in it. OpenCV
    releases the GIL while it decodes, so on a thread the decoder runs on another core
    alongside the analysis instead of before it. Order and content are unchanged; an
    error in the decoder is raised in the consumer.
    """

    _END = object()

    def __init__(self, frames: Iterable[Frame], depth: int = READ_AHEAD) -> None:
        self._frames = frames
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self._frames:
                if not self._put(frame):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(self._END)

    def _put(self, item: object) -> bool:
        """Waits for room in the queue; False once the consumer has stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stops the decoder thread; the source may be released after this returns."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def frames_of(source: FrameSource) -> Iterator[Iterable[Frame]]:
    """The source's frames, decoded ahead for files and folders.

    Live sources already read on their own thread and keep only the newest frame,
    which a queue in front of them would only delay.
    """
    if source.info.live:
        yield source
        return
    with ReadAhead(source) as frames:
        yield frames


@dataclass(frozen=True)
class RunReport:
    summary: dict[str, Any]
    people: list[TrackSummary]


def run(
    source: FrameSource,
    analyzer: Analyzer,
    options: RunOptions,
    console: Console | None = None,
    on_result: Callable[[FrameResult], None] | None = None,
) -> RunReport:
    """Process the source until it ends, the frame limit, or a stop signal.

    However the run ends, the open tracks become events, the video is finalised and the
    summary is written; a failure is raised after that, with the summary recording it.
    """
    console = console or Console(stderr=True)
    if options.summary is not None:
        check_writable(options.summary)
    state = RunState()
    failure: BaseException | None = None
    with stop_signals() as shutdown, _log_to(console):
        try:
            _pump(source, analyzer, options, console, state, shutdown, on_result)
        except KeyboardInterrupt:  # Interrupted, or Ctrl-C where no handler could be installed
            state.interrupted = True
        except BaseException as exc:
            failure = exc
        summary = build_summary(source, analyzer, state)
        if failure is not None:
            summary["error"] = str(failure) if isinstance(failure, UserError) else f"unexpected {type(failure).__name__}: {failure}"
        if options.summary is not None:
            try:
                write_json_atomic(options.summary, summary)
            except OutputError:
                if failure is None:
                    raise
                # the run is already failing (a full disk, say): report the first error
        if failure is not None:
            raise failure
        return RunReport(summary, state.people)


def _pump(
    source: FrameSource,
    analyzer: Analyzer,
    options: RunOptions,
    console: Console,
    state: RunState,
    shutdown: Shutdown,
    on_result: Callable[[FrameResult], None] | None,
) -> None:
    """Frames through the analyzer into the sinks; the sinks are closed however it ends."""
    info = source.info
    with ExitStack() as stack:
        video = stack.enter_context(VideoSink(options.output, info.fps, (info.width, info.height))) if options.output else None
        events = stack.enter_context(JsonLinesSink(options.events)) if options.events else None
        frames = stack.enter_context(JsonLinesSink(options.frames)) if options.frames else None
        overlay = Overlay.for_frame(info.width, info.height)
        window = _open_window(options, console)
        if window:
            stack.callback(display.close)

        def finish(tracks: list[TrackSummary]) -> None:
            state.people_count += len(tracks)
            if options.keep_people:
                state.people.extend(tracks)
            if events is not None:
                events.write_all(t.to_event() for t in tracks)

        first: BaseException | None = None
        try:
            with _progress(source, options, console, state) as tick:
                for frame in stack.enter_context(frames_of(source)):
                    if options.max_frames is not None and state.frames >= options.max_frames:
                        break
                    with shutdown.frame():
                        result = analyzer.process(frame.image, frame.index, frame.time)
                        state.frames += 1
                        state.last_time = frame.time
                        state.faces_now = len(result.faces)
                        finish(result.finished)
                        if frames is not None:
                            frames.write(frame_record(result))
                        if video is not None or window:
                            fps = state.frames / max(time.perf_counter() - state.started, 1e-9)
                            annotated = overlay.annotate(frame.image, result.faces, f"{fps:.1f} fps  {len(result.faces)} faces")
                            if video is not None:
                                video.write(annotated)
                            if window and not _show(annotated, console):
                                state.window_closed = True
                                break
                        if on_result is not None:
                            on_result(result)
                        tick()
        except BaseException as exc:
            first = exc
            raise
        finally:
            try:
                finish(analyzer.finish())
            except OutputError:
                if first is None or isinstance(first, KeyboardInterrupt):
                    raise
                # the run is already failing on this output: report the first error


class _ConsoleLog(logging.Handler):
    """The product's warnings (a stream down, retrying) on the run's console, above the progress display."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


@contextmanager
def _log_to(console: Console) -> Iterator[None]:
    logger = logging.getLogger("realtime")
    handler = _ConsoleLog(console)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _open_window(options: RunOptions, console: Console) -> bool:
    if not options.display:
        return False
    problem = display.display_problem()
    if problem is not None:
        console.print(f"[yellow]{problem}: running without a window[/]")
        return False
    return True


def _show(frame: Any, console: Console) -> bool:
    """Shows the frame; False when the user pressed q or Esc."""
    try:
        return display.show(frame)
    except cv2.error as exc:
        console.print(f"[yellow]cannot open a window ({str(exc).splitlines()[0]}); continuing without[/]")
        return True


def build_summary(source: FrameSource, analyzer: Analyzer, state: RunState) -> dict[str, Any]:
    info = source.info
    elapsed = time.perf_counter() - state.started
    duration = state.frames / info.fps if not info.live else state.last_time
    meta = analyzer.model.metadata
    summary: dict[str, Any] = {
        "source": info.name,
        "source_kind": info.kind,
        "frames": state.frames,
        "duration": round(duration, 3),
        "processing_seconds": round(elapsed, 3),
        "processing_fps": round(state.frames / elapsed, 2) if elapsed > 0 else None,
        "tracks": state.people_count,
        "faces_inferred": analyzer.faces_inferred,
        "execution_providers": analyzer.providers,
        "model": {"file": str(analyzer.model.path), "name": meta.name, "version": meta.version},
        "detector": analyzer.options.detector.model,
        "detect_every": analyzer.detect_every,
        "interrupted": state.interrupted,
        "people": [p.to_event() for p in state.people],
    }
    if isinstance(source, LiveSource):
        stats = source.stats
        summary.update(dropped_frames=stats.dropped, reconnects=stats.reconnects, gaps=stats.gaps_so_far())
    return summary


class _progress:
    """A progress bar for files and folders, a live status line for cameras and streams."""

    def __init__(self, source: FrameSource, options: RunOptions, console: Console, state: RunState) -> None:
        self.source, self.options, self.console, self.state = source, options, console, state
        self.info = source.info
        self._ctx: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.options.progress:
            return lambda: None
        if self.info.live:
            # rendered on Live's own refresh, so the line stays current while no frame comes
            self._ctx = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self._ctx.__enter__()
            return lambda: None
        total = self.info.frame_count
        if self.options.max_frames is not None:
            total = min(total, self.options.max_frames) if total else self.options.max_frames
        self._ctx = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:.1f} fps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._ctx.__enter__()
        self._task = self._ctx.add_task(Path(self.info.name).name, total=total, fps=0.0)
        return self._tick_file

    def _fps(self) -> float:
        return self.state.frames / max(time.perf_counter() - self.state.started, 1e-9)

    def _tick_file(self) -> None:
        self._ctx.update(self._task, advance=1, fps=self._fps())

    def _status(self) -> str:
        s = self.state
        line = f"{self.info.name}: {s.frames} frames, {self._fps():.1f} fps, {s.faces_now} faces now, {s.people_count} people done"
        down = self.source.stats.status if isinstance(self.source, LiveSource) else None
        return f"{line} | {down}" if down else line

    def __rich__(self) -> str:
        return self._status()

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
