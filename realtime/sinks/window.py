"""The live window: the annotated frames on screen (several streams tiled in one), q or Esc ends the run."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from .. import display
from .base import ShownFrame, StopRun

if TYPE_CHECKING:
    from ..analyzer import TrackSummary
    from ..sources import SourceInfo
    from ..summary import RunSummary

log = logging.getLogger(__name__)


def show_or_stop(image: np.ndarray) -> bool:
    """Shows the image; False when no window could open (the run goes on without one).
    Raises StopRun when the user closed the window (q or Esc)."""
    try:
        keep_going = display.show(image)
    except cv2.error as exc:
        log.warning("cannot open a window (%s); continuing without", str(exc).splitlines()[0])
        return False
    if not keep_going:
        raise StopRun()
    return True


class WindowSink:
    def __init__(self) -> None:
        self.showing = False

    def open(self, info: SourceInfo) -> None:
        problem = display.display_problem()
        if problem is not None:
            log.warning("%s: running without a window", problem)
            return
        self.showing = True

    def on_frame(self, shown: ShownFrame) -> None:
        if self.showing:
            self.showing = show_or_stop(shown.annotated())

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        if self.showing:
            display.close()
            self.showing = False


# a stream's cell in the tiled window, before the whole grid is fitted to the screen
CELL_WIDTH = 640


def tile_views(views: Sequence[np.ndarray | None], cell_width: int = CELL_WIDTH) -> np.ndarray:
    """The views in a grid of ceil(sqrt(n)) columns, each scaled into a 16:9 cell; a
    stream with no frame yet is a black cell."""
    count = max(1, len(views))
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cell_h = cell_width * 9 // 16
    grid = np.zeros((rows * cell_h, cols * cell_width, 3), np.uint8)
    for i, view in enumerate(views):
        if view is None:
            continue
        scale = min(cell_width / view.shape[1], cell_h / view.shape[0])
        w, h = max(1, int(view.shape[1] * scale)), max(1, int(view.shape[0] * scale))
        y, x = (i // cols) * cell_h + (cell_h - h) // 2, (i % cols) * cell_width + (cell_width - w) // 2
        grid[y : y + h, x : x + w] = cv2.resize(view, (w, h), interpolation=cv2.INTER_AREA)
    return grid


class TiledWindow:
    """One window for several streams: each stream's `slot` sink keeps its latest
    annotated frame, and `show` (after each tick) draws them all as one grid."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.views: dict[str, np.ndarray | None] = {name: None for name in self.names}
        self.showing = False

    def open(self) -> None:
        problem = display.display_problem()
        if problem is not None:
            log.warning("%s: running without a window", problem)
            return
        self.showing = True

    def slot(self, name: str) -> "WindowSlot":
        return WindowSlot(self, name)

    def show(self) -> None:
        """Raises StopRun when the user closes the window (q or Esc)."""
        if self.showing:
            self.showing = show_or_stop(tile_views([self.views[n] for n in self.names]))

    def close(self) -> None:
        if self.showing:
            display.close()
            self.showing = False


class WindowSlot:
    """One stream's place in a TiledWindow (a Sink)."""

    def __init__(self, window: TiledWindow, name: str) -> None:
        self.window, self.name = window, name

    def open(self, info: SourceInfo) -> None:
        pass

    def on_frame(self, shown: ShownFrame) -> None:
        if self.window.showing:  # drawn only when someone can see it
            self.window.views[self.name] = shown.annotated()

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        self.window.views[self.name] = None
