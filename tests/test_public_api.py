"""The public API of `realtime`: every exported name resolves, and the documented use runs."""

from __future__ import annotations

import json

import realtime
from tests.conftest import WALKING


def test_every_exported_name_resolves():
    for name in realtime.__all__:
        assert getattr(realtime, name) is not None, name


def test_the_documented_run_writes_events(tmp_path):
    events = tmp_path / "people.jsonl"
    with realtime.open_source(str(WALKING)) as source, realtime.Analyzer.create_from_options(
        realtime.AnalyzerOptions(fps=source.info.fps)
    ) as analyzer:
        summary = realtime.run(source, analyzer, realtime.RunOptions(outputs={"events": events}, progress=False))
    assert isinstance(summary, realtime.RunSummary)
    assert summary.frames == 41 and summary.tracks == 3 and not summary.interrupted
    assert [json.loads(line)["track_id"] for line in events.read_text().splitlines()] == [p.track_id for p in summary.people]
