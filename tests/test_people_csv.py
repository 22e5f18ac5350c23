"""The people CSV: a sink added in one file, one row per person, the same values as the events."""

from __future__ import annotations

import csv
import json

from realtime.sinks import OUTPUTS, PeopleCsvSink, Sink
from tests.conftest import WALKING, run_cli


def test_people_csv_has_one_row_per_event(tmp_path):
    people, events = tmp_path / "people.csv", tmp_path / "events.jsonl"
    done = run_cli("--source", str(WALKING), "--no-display", "--quiet", "--people-csv", str(people), "--events", str(events), timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(people.open(newline="")))
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(rows) == len(records) == 3
    for row, record in zip(rows, records):
        assert int(row["track_id"]) == record["track_id"]
        assert float(row["age"]) == record["age"]
        assert row["gender"] == record["gender"]
        assert float(row["last_time"]) == record["last_time"]


def test_people_csv_refuses_to_be_the_events_file(tmp_path):
    done = run_cli("--source", str(WALKING), "--no-display", "--people-csv", str(tmp_path / "x"), "--events", str(tmp_path / "x"), timeout=120)
    assert done.returncode == 2 and "same file" in done.stderr


def test_every_registered_output_is_a_sink(tmp_path):
    for kind in OUTPUTS:
        path = tmp_path / ("out.mp4" if kind.option == "--output" else f"{kind.name}.out")
        assert isinstance(kind.make(path), Sink), kind.name
    assert any(kind.make is PeopleCsvSink for kind in OUTPUTS)
