"""Pumps frames from a source through an analyzer into the outputs.

This is the I/O edge shared by run_camera.py and the kiosk: it opens every sink before
the first frame, shows progress, and guarantees that however the run ends (end of file,
--max-frames, Ctrl-C, SIGTERM, an error) the open tracks are closed into events, the
video is finalised so it plays, and the summary is written.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
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
from .errors import OutputError
from .overlay import Overlay
from .sinks import JsonLinesSink, VideoSink, check_writable, write_json_atomic
from .sources import Frame, FrameSource, LiveSource

WINDOW = "agegender"
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


def display_available() -> bool:
    """Whether a window can open: opening one without a display aborts the process."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


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


class _Terminate(Exception):
    pass


class _StopBetweenFrames:
    """Ctrl-C and SIGTERM handler that never cuts a frame in half.

    A signal landing inside `analyzer.process` would leave the tracks updated for a
    frame that no output records, so the events would end one frame after the last
    frame written. While a frame is in progress the signal is held and raised as soon
    as the frame is fully recorded; between frames (waiting for a live source, say) it
    stops the run at once.
    """

    def __init__(self) -> None:
        self.busy = False
        self.pending = False

    def handle(self, signum: int, _frame: object) -> None:
        if self.busy:
            self.pending = True
            return
        raise _Terminate()

    @contextmanager
    def frame(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
        if self.pending:
            raise _Terminate()


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
    """Process the source until it ends, the frame limit, Ctrl-C or SIGTERM."""
    console = console or Console(stderr=True)
    for path in (options.summary,):
        if path is not None:
            check_writable(path)
    state = RunState()
    info = source.info
    in_main = threading.current_thread() is threading.main_thread()
    stopper = _StopBetweenFrames()
    previous_term = signal.signal(signal.SIGTERM, stopper.handle) if in_main else None
    if in_main:
        signal.signal(signal.SIGINT, stopper.handle)
    try:
        with ExitStack() as stack:
            video = stack.enter_context(VideoSink(options.output, info.fps, (info.width, info.height))) if options.output else None
            events = stack.enter_context(JsonLinesSink(options.events)) if options.events else None
            frames = stack.enter_context(JsonLinesSink(options.frames)) if options.frames else None
            overlay = Overlay.for_frame(info.width, info.height)
            display = options.display and display_available()
            if options.display and not display:
                console.print("[yellow]no display found: running without a window[/]")

            def finish(tracks: list[TrackSummary]) -> None:
                state.people_count += len(tracks)
                if options.keep_people:
                    state.people.extend(tracks)
                if events is not None:
                    events.write_all(t.to_event() for t in tracks)

            failure: BaseException | None = None
            try:
                with _progress(info, options, console, state) as tick:
                    for frame in stack.enter_context(frames_of(source)):
                        if options.max_frames is not None and state.frames >= options.max_frames:
                            break
                        with stopper.frame():
                            result = analyzer.process(frame.image, frame.index, frame.time)
                            state.frames += 1
                            state.last_time = frame.time
                            state.faces_now = len(result.faces)
                            finish(result.finished)
                            if frames is not None:
                                frames.write(frame_record(result))
                            if video is not None or display:
                                fps = state.frames / max(time.perf_counter() - state.started, 1e-9)
                                annotated = overlay.annotate(frame.image, result.faces, f"{fps:.1f} fps  {len(result.faces)} faces")
                                if video is not None:
                                    video.write(annotated)
                                if display and not _show(annotated, console):
                                    state.window_closed = True
                                    break
                            if on_result is not None:
                                on_result(result)
                            tick()
            except (KeyboardInterrupt, _Terminate):
                state.interrupted = True
            except BaseException as exc:
                failure = exc
                raise
            finally:
                if in_main:
                    # a second Ctrl-C must not cut the flushing of what was already done
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                try:
                    finish(analyzer.finish())
                except OutputError:
                    if failure is None:
                        raise
                    # the run is already failing on this output: report the first error
                if display:
                    cv2.destroyAllWindows()
        summary = build_summary(source, analyzer, state)
        if options.summary is not None:
            write_json_atomic(options.summary, summary)
        return RunReport(summary, state.people)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous_term or signal.SIG_DFL)


def _show(frame: Any, console: Console) -> bool:
    """Shows the frame; False when the user pressed q or Esc."""
    try:
        cv2.imshow(WINDOW, frame)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as exc:
        console.print(f"[yellow]cannot open a window ({str(exc).splitlines()[0]}); continuing without[/]")
        return True
    return key not in (ord("q"), 27)


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
        summary.update(dropped_frames=stats.dropped, reconnects=stats.reconnects, gaps=stats.gaps)
    return summary


class _progress:
    """A progress bar for files and folders, a live status line for cameras and streams."""

    def __init__(self, info: Any, options: RunOptions, console: Console, state: RunState) -> None:
        self.info, self.options, self.console, self.state = info, options, console, state
        self._ctx: Any = None
        self._last = 0.0

    def __enter__(self) -> Callable[[], None]:
        if not self.options.progress:
            return lambda: None
        if self.info.live:
            self._ctx = Live(self._status(), console=self.console, refresh_per_second=2, transient=True)
            self._ctx.__enter__()
            return self._tick_live
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
        return f"{self.info.name}: {s.frames} frames, {self._fps():.1f} fps, {s.faces_now} faces now, {s.people_count} people done"

    def _tick_live(self) -> None:
        now = time.perf_counter()
        if now - self._last > 0.5:
            self._last = now
            self._ctx.update(self._status())

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
