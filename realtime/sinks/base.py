"""The one interface every output implements: a Sink sees the run open, each frame, each
person who leaves, and the run close.

Like supervision's annotators (`annotate(scene, detections)`), a sink needs nothing but
what it is handed: the video writer, the JSON lines, the summary, the window, the kiosk
store and the people CSV are all sinks, and the runner loops over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..analyzer import FrameResult, TrackSummary
    from ..overlay import Overlay
    from ..sources import Frame, SourceInfo
    from ..summary import RunSummary


class StopRun(Exception):
    """Raised by a sink's `on_frame` to end the run normally (the window's q or Esc)."""


@dataclass
class ShownFrame:
    """One processed frame as the sinks see it; the annotated picture is drawn at most once."""

    frame: Frame
    result: FrameResult
    overlay: Overlay
    fps: float  # processing rate so far, for the status line
    _annotated: np.ndarray | None = field(default=None, repr=False)

    def annotated(self) -> np.ndarray:
        """The frame with every face's box and label and the status line (drawn in place)."""
        if self._annotated is None:
            status = f"{self.fps:.1f} fps  {len(self.result.faces)} faces"
            self._annotated = self.overlay.annotate(self.frame.image, self.result.faces, status)
        return self._annotated


@runtime_checkable
class Sink(Protocol):
    def open(self, info: SourceInfo) -> None:
        """Before the first frame: create files, fail at once on a bad path (OutputError)."""

    def on_frame(self, shown: ShownFrame) -> None:
        """Every processed frame, in order."""

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        """People whose track ended: as they leave (`at_end` False) and, when the run ends,
        everyone still in view (`at_end` True)."""

    def close(self, summary: RunSummary) -> None:
        """After the last frame, however the run ended; `summary.error` says if it failed."""
