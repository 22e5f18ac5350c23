"""What a run shows while it works: a bar for files and folders, a status line for live sources."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .sources import FrameSource, LiveSource


@dataclass
class RunCounters:
    """The running figures the progress display and the summary read."""

    frames: int = 0
    people_count: int = 0
    faces_now: int = 0
    last_time: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def fps(self) -> float:
        return self.frames / max(time.perf_counter() - self.started, 1e-9)


class RunProgress:
    """A progress bar for files and folders, a live status line for cameras and streams."""

    def __init__(self, source: FrameSource, console: Console, counters: RunCounters, shown: bool, max_frames: int | None) -> None:
        self.source, self.console, self.state = source, console, counters
        self.shown, self.max_frames = shown, max_frames
        self.info = source.info
        self._ctx: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.shown:
            return lambda: None
        if self.info.live:
            # rendered on Live's own refresh, so the line stays current while no frame comes
            self._ctx = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self._ctx.__enter__()
            return lambda: None
        total = self.info.frame_count
        if self.max_frames is not None:
            total = min(total, self.max_frames) if total else self.max_frames
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

    def _tick_file(self) -> None:
        self._ctx.update(self._task, advance=1, fps=self.state.fps())

    def _status(self) -> str:
        s = self.state
        line = f"{self.info.name}: {s.frames} frames, {self.state.fps():.1f} fps, {s.faces_now} faces now, {s.people_count} people done"
        down = self.source.stats.status if isinstance(self.source, LiveSource) else None
        return f"{line} | {down}" if down else line

    def __rich__(self) -> str:
        return self._status()

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
