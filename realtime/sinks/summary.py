"""`--summary`: the run's record, written once at the end, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .base import ShownFrame
from .writers import check_writable, write_json_atomic

if TYPE_CHECKING:
    from ..analyzer import TrackSummary
    from ..sources import SourceInfo
    from ..summary import RunSummary


class SummarySink:
    def __init__(self, path: Path) -> None:
        self.path = check_writable(Path(path))

    def open(self, info: SourceInfo) -> None:
        check_writable(self.path)  # the folder may have gone since the options were checked

    def on_frame(self, shown: ShownFrame) -> None:
        pass

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        write_json_atomic(self.path, summary.to_dict())
