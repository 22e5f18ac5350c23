"""The whole run's tables: every person in every file (Parquet and CSV), and the final
rich table of what the run did.

The people tables are rebuilt from the files done, each time in full and atomically
(realtime.files): from the workers' answers for this run's files and from each earlier
file's own summary.json, so a resumed run's tables hold every file in --out.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from rich.table import Table

from ..files import write_bytes_atomic, write_text_atomic
from . import layout
from .manifest import FileEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonRow:
    """One person in one file; the columns of people.parquet and people.csv, in order."""

    file: str
    track_id: int
    start: float  # seconds into the file
    end: float
    age: float | None
    age_std: float | None
    gender: str | None
    gender_confidence: float | None
    frames: int  # frames the person was seen in

    @classmethod
    def from_event(cls, file: str, event: Mapping[str, Any]) -> PersonRow:
        return cls(
            file, int(event["track_id"]), float(event["first_time"]), float(event["last_time"]), event.get("age"),
            event.get("age_std"), event.get("gender"), event.get("gender_confidence"), int(event["frames_seen"]),
        )


COLUMNS = tuple(f.name for f in fields(PersonRow))


def people_of(entry: FileEntry, out: Path) -> list[PersonRow]:
    """The people of a file done earlier, from its summary.json ([] with a warning if unreadable)."""
    path = out / entry.output / layout.SUMMARY
    try:
        events = json.loads(path.read_text(encoding="utf-8"))["people"]
        return [PersonRow.from_event(entry.path, e) for e in events]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("people of %s left out of the tables: cannot read %s (%s)", entry.path, path, exc)
        return []


def write_people_tables(out: Path, rows: Iterable[PersonRow]) -> int:
    """people.parquet and people.csv under `out`, each replaced whole; returns the row count."""
    ordered = sorted(rows, key=lambda r: (r.file, r.start, r.track_id))
    write_bytes_atomic(out / layout.PEOPLE_PARQUET, parquet_bytes(ordered))
    write_text_atomic(out / layout.PEOPLE_CSV, csv_text(ordered))
    return len(ordered)


def parquet_bytes(rows: Sequence[PersonRow]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("file", pa.string()), ("track_id", pa.int64()), ("start", pa.float64()), ("end", pa.float64()),
        ("age", pa.float64()), ("age_std", pa.float64()), ("gender", pa.string()),
        ("gender_confidence", pa.float64()), ("frames", pa.int64()),
    ])
    table = pa.table({name: [getattr(r, name) for r in rows] for name in COLUMNS}, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def csv_text(rows: Sequence[PersonRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(["" if v is None else v for v in astuple(r)] for r in rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class BatchReport:
    """What one run of the command did."""

    done: int  # files finished in this run
    failed: int
    skipped: int  # done in an earlier run, unchanged
    unfinished: int  # left pending by a stop
    video_seconds: float  # processed in this run
    wall_seconds: float
    people: int  # rows in the people tables
    interrupted: bool
    failures: tuple[tuple[str, str], ...] = ()  # (path, error)

    @property
    def speed(self) -> float:
        """Video seconds processed per wall-clock second."""
        return self.video_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


def report_table(report: BatchReport) -> Table:
    title = "batch interrupted" if report.interrupted else "batch done"
    table = Table(title=title)
    table.add_column("files done", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("skipped", justify="right")
    if report.unfinished:
        table.add_column("unfinished", justify="right")
    for name in ("video hours", "wall time", "video s / s", "people"):
        table.add_column(name, justify="right")
    cells = [str(report.done), str(report.failed), str(report.skipped)] + ([str(report.unfinished)] if report.unfinished else [])
    cells += [f"{report.video_seconds / 3600:.3f}", f"{report.wall_seconds:.1f} s", f"{report.speed:.2f}", str(report.people)]
    table.add_row(*cells)
    return table
