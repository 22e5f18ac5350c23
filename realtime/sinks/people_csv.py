"""`--people-csv`: one spreadsheet row per person, written as the person leaves.

For users who want the people of a recording in a spreadsheet rather than JSON lines:
the same values as the events, one flushed row each, so a crash keeps every row before it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import OutputError
from ..smoothing import Estimates
from .base import ShownFrame
from .writers import check_writable

if TYPE_CHECKING:
    from ..analyzer import TrackSummary
    from ..sources import SourceInfo
    from ..summary import RunSummary

# the person's span, then every smoothed attribute (a new attribute becomes a column by itself)
COLUMNS = ("track_id", "first_time", "last_time", "frames_seen", *(f.name for f in fields(Estimates)))


def person_row(person: TrackSummary) -> list[object]:
    event = person.to_event()
    return ["" if event[c] is None else event[c] for c in COLUMNS]


class PeopleCsvSink:
    def __init__(self, path: Path) -> None:
        self.path = check_writable(Path(path))
        self._file: io.TextIOWrapper | None = None

    def open(self, info: SourceInfo) -> None:
        try:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None
        self._rows([COLUMNS])

    def on_frame(self, shown: ShownFrame) -> None:
        pass

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        self._rows(person_row(p) for p in people)

    def close(self, summary: RunSummary) -> None:
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass  # the write that failed already said why

    def _rows(self, rows: object) -> None:
        assert self._file is not None, "opened before the first row"
        try:
            csv.writer(self._file).writerows(rows)  # type: ignore[arg-type]
            self._file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
