"""The live window: the annotated frames on screen, q or Esc ends the run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import cv2

from .. import display
from .base import ShownFrame, StopRun

if TYPE_CHECKING:
    from ..analyzer import TrackSummary
    from ..sources import SourceInfo
    from ..summary import RunSummary

log = logging.getLogger(__name__)


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
        if not self.showing:
            return
        try:
            keep_going = display.show(shown.annotated())
        except cv2.error as exc:
            log.warning("cannot open a window (%s); continuing without", str(exc).splitlines()[0])
            self.showing = False
            return
        if not keep_going:
            raise StopRun()

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        if self.showing:
            display.close()
            self.showing = False
