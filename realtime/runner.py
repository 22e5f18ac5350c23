"""Pumps frames from a source through an analyzer into the sinks.

This is the I/O edge shared by run_camera.py and the kiosk. Every output is a Sink
(realtime/sinks): all are opened before the first frame, each frame and each person who
leaves is handed to every one, and however the run ends (end of file, --max-frames, a
stop signal, an error) the people still in view are handed over as finished and every
sink is closed with the run's summary: the video is finalised so it plays, and the
summary, closed last, records the first error if there was one.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from rich.console import Console
from rich.table import Table

from .analyzer import Analyzer, FrameResult, TrackSummary
from .errors import OutputError, UserError
from .overlay import Overlay
from .progress import RunCounters, RunProgress
from .readahead import READ_AHEAD, ReadAhead, frames_of
from .shutdown import Shutdown, stop_signals
from .sinks import ShownFrame, Sink, StopRun, WindowSink, build_sinks
from .sources import FrameSource, LiveSource
from .summary import LiveSummary, ModelInfo, RunSummary

__all__ = [
    "READ_AHEAD", "ReadAhead", "RunOptions", "RunState", "build_summary", "close_sinks", "console_logging", "describe",
    "finish_people", "frames_of", "people_table", "run",
]


@dataclass(frozen=True)
class RunOptions:
    # the file outputs, by `realtime.sinks.OUTPUTS` name ("video", "events", ...)
    outputs: Mapping[str, Path] = field(default_factory=dict)
    display: bool = False
    max_frames: int | None = None
    progress: bool = True
    # False for unattended runs of days (the kiosk): people are counted and passed to
    # the sinks but not kept for the summary, so memory stays flat
    keep_people: bool = True


@dataclass
class RunState(RunCounters):
    people: list[TrackSummary] = field(default_factory=list)
    interrupted: bool = False
    window_closed: bool = False


def people_table(people: list[TrackSummary]) -> Table:
    table = Table(title=f"{len(people)} people")
    for column in ("track", "seen", "frames", "inferred", "age", "gender"):
        table.add_column(column, justify="right" if column not in ("gender",) else "left")
    for p in people:
        age = f"{p.age:.0f} ± {p.age_std:.0f}" if p.age is not None and p.age_std is not None else "-"
        gender = f"{p.gender} ({p.gender_confidence:.0%})" if p.gender and p.gender_confidence else "uncertain" if p.age is not None else "-"
        span = f"{p.first_time:.1f}-{p.last_time:.1f}s"
        table.add_row(str(p.track_id), span, str(p.frames_seen), str(p.frames_inferred), age, gender)
    return table


def run(
    source: FrameSource,
    analyzer: Analyzer,
    options: RunOptions,
    console: Console | None = None,
    on_result: Callable[[FrameResult], None] | None = None,
    sinks: Sequence[Sink] = (),
) -> RunSummary:
    """Process the source until it ends, the frame limit, or a stop signal.

    `sinks` are added after the file outputs of `options` and the window. A failure is
    raised after every sink has been closed, the summary recording it.
    """
    console = console or Console(stderr=True)
    chosen = [*build_sinks(options.outputs), *([WindowSink()] if options.display else []), *sinks]
    state = RunState()
    with stop_signals() as shutdown, console_logging(console):
        opened: list[Sink] = []
        failure: BaseException | None = None
        try:
            for sink in chosen:
                sink.open(source.info)
                opened.append(sink)
            _pump(source, analyzer, options, console, state, shutdown, opened, on_result)
        except KeyboardInterrupt:  # Interrupted, or Ctrl-C where no handler could be installed
            state.interrupted = True
        except BaseException as exc:
            failure = exc
        summary = build_summary(source, analyzer, state, failure)
        summary, failure = close_sinks(opened, summary, failure)
    if failure is not None:
        raise failure
    return summary


def _pump(
    source: FrameSource,
    analyzer: Analyzer,
    options: RunOptions,
    console: Console,
    state: RunState,
    shutdown: Shutdown,
    sinks: Sequence[Sink],
    on_result: Callable[[FrameResult], None] | None,
) -> None:
    """Frames through the analyzer into the sinks; the people in view are finished however it ends."""
    overlay = Overlay.for_frame(source.info.width, source.info.height)
    first: BaseException | None = None
    try:
        with RunProgress(source, console, state, options.progress, options.max_frames) as tick, frames_of(source) as frames:
            for frame in frames:
                if options.max_frames is not None and state.frames >= options.max_frames:
                    break
                with shutdown.frame():
                    result = analyzer.process(frame.image, frame.index, frame.time)
                    state.frames += 1
                    state.last_time = frame.time
                    state.faces_now = len(result.faces)
                    finish_people(result.finished, False, state, options.keep_people, sinks)
                    shown = ShownFrame(frame, result, overlay, state.fps())
                    for sink in sinks:
                        sink.on_frame(shown)
                    if on_result is not None:
                        on_result(result)
                    tick()
    except StopRun:
        state.window_closed = True
    except BaseException as exc:
        first = exc
        raise
    finally:
        try:
            finish_people(analyzer.finish(), True, state, options.keep_people, sinks)
        except OutputError:
            if first is None or isinstance(first, KeyboardInterrupt):
                raise
            # the run is already failing on this output: report the first error


def finish_people(people: list[TrackSummary], at_end: bool, state: RunState, keep_people: bool, sinks: Sequence[Sink]) -> None:
    """People who left (or, `at_end`, everyone still in view) counted and handed to every sink."""
    state.people_count += len(people)
    if keep_people:
        state.people.extend(people)
    if people or at_end:
        for sink in sinks:
            sink.on_people_finished(people, at_end)


def close_sinks(sinks: Sequence[Sink], summary: RunSummary, failure: BaseException | None) -> tuple[RunSummary, BaseException | None]:
    """Closes in reverse order of opening; the first failure wins and the summary records it."""
    for sink in reversed(sinks):
        try:
            sink.close(summary)
        except BaseException as exc:  # noqa: BLE001 - every sink must get its close
            if failure is None:
                failure = exc
                summary = summary.failed(describe(exc))
    return summary, failure


def describe(failure: BaseException) -> str:
    return str(failure) if isinstance(failure, UserError) else f"unexpected {type(failure).__name__}: {failure}"


def build_summary(source: FrameSource, analyzer: Analyzer, state: RunState, failure: BaseException | None = None) -> RunSummary:
    info = source.info
    elapsed = time.perf_counter() - state.started
    duration = state.frames / info.fps if not info.live else state.last_time
    meta = analyzer.model.metadata
    live = None
    if isinstance(source, LiveSource):
        stats = source.stats
        live = LiveSummary(dropped_frames=stats.dropped, reconnects=stats.reconnects, gaps=stats.gaps_so_far())
    return RunSummary(
        source=info.name,
        source_kind=info.kind,
        frames=state.frames,
        duration=round(duration, 3),
        processing_seconds=round(elapsed, 3),
        processing_fps=round(state.frames / elapsed, 2) if elapsed > 0 else None,
        tracks=state.people_count,
        faces_inferred=analyzer.faces_inferred,
        execution_providers=analyzer.providers,
        model=ModelInfo(file=str(analyzer.model.path), name=meta.name, version=meta.version),
        detector=analyzer.options.detector.model,
        detect_every=analyzer.detect_every,
        interrupted=state.interrupted,
        people=list(state.people),
        error=None if failure is None else describe(failure),
        live=live,
    )


class _ConsoleLog(logging.Handler):
    """The product's warnings (a stream down, no window) on the run's console, above the progress display."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)


@contextmanager
def console_logging(console: Console) -> Iterator[None]:
    """The product's warnings on `console` for the duration; nested uses print once."""
    logger = logging.getLogger("realtime")
    if any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        yield
        return
    handler = _ConsoleLog(console)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
