"""Kiosk reports: figures over a period, in JSON, CSV and HTML, from the command line."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from datetime import datetime

import pytest

from realtime.kiosk import report
from realtime.kiosk.queries import StoreReader
from realtime.kiosk.store import KioskStore, StoreOptions
from realtime.kiosk.visits import AgeBrackets, Visit
from realtime.paths import ROOT


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2024, 5, day, hour, minute).timestamp()  # local time, as the kiosk reports


def visit(track_id: int, start: float, dwell: float, attention: float, glances: int, bracket: str, gender: str) -> Visit:
    return Visit(track_id, start, start + dwell, dwell, attention, glances, 30.0, 2.0, bracket, gender, 0.9)


VISITS = [
    # 1 May, morning: three visits, two viewers
    visit(1, at(1, 9, 5), 3.0, 0.0, 0, "18-24", "female"),
    visit(2, at(1, 9, 20), 12.0, 4.0, 1, "18-24", "male"),
    visit(3, at(1, 9, 40), 45.0, 12.0, 3, "35-44", "female"),
    # 1 May, afternoon
    visit(4, at(1, 14, 10), 7.0, 1.5, 1, "65+", "unknown"),
    # 2 May
    visit(5, at(2, 11, 0), 25.0, 0.0, 0, "unknown", "unknown"),
]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("kiosk")
    with KioskStore.open(data_dir, StoreOptions(retention_days=None), now=at(1, 8)) as store:
        store.add_visits(VISITS)
    return data_dir


def build(store_dir, start: str, end: str) -> report.Report:
    reader = StoreReader(store_dir)
    t0, t1 = report.resolve_range(reader, start, end)
    return report.build_report(reader, t0, t1)


def test_a_bare_date_range_is_whole_days():
    assert report.parse_time("2024-05-01") == at(1, 0)
    assert report.parse_time("2024-05-01", end=True) == at(2, 0)
    assert report.parse_time("2024-05-01T09:30") == at(1, 9, 30)
    assert report.parse_time("2024-05-01T09:30:00+00:00") == datetime.fromisoformat("2024-05-01T09:30:00+00:00").timestamp()


def test_json_has_the_totals_and_brackets_by_gender(store_dir):
    d = report.to_dict(build(store_dir, "2024-05-01", "2024-05-01"))
    assert isinstance(d["visits"], int) and d["visits"] == 4
    assert d["viewers"] == 3 and d["glances"] == 5
    assert d["attention_rate"] == 0.75
    assert d["average_dwell_s"] == pytest.approx((3 + 12 + 45 + 7) / 4, abs=1e-3)
    assert d["average_attention_s"] == pytest.approx((4 + 12 + 1.5) / 3, abs=1e-3)
    assert d["brackets"]["18-24"] == {"female": 1, "male": 1, "unknown": 0, "total": 2}
    assert d["brackets"]["35-44"]["female"] == 1 and d["brackets"]["65+"]["unknown"] == 1
    assert d["brackets"]["under 18"]["total"] == 0  # configured brackets are all listed
    assert "unknown" not in d["brackets"]  # no visit of unknown age on 1 May
    hours = {h["hour"]: h for h in d["hourly"]}
    assert hours[9]["visits"] == 3 and hours[9]["viewers"] == 2 and hours[14]["visits"] == 1
    assert sum(h["visits"] for h in d["hourly"]) == 4
    assert [b["visits"] for b in d["dwell_distribution"]] == [1, 1, 1, 0, 1, 0, 0, 0]
    assert [b["viewers"] for b in d["attention_distribution"]] == [0, 1, 1, 0, 1, 0]  # 1.5, 4 and 12 s
    assert d["daily"] == [{"date": "2024-05-01", "visits": 4, "viewers": 3}]
    assert set(d["definitions"]) >= {"visit", "attention_rate", "dwell_time"}


def test_range_limits(store_dir):
    assert report.to_dict(build(store_dir, "2024-05-01", "2024-05-02"))["visits"] == 5
    assert report.to_dict(build(store_dir, "2024-05-01T09:10", "2024-05-01T10:00"))["visits"] == 2
    assert report.to_dict(build(store_dir, "2024-05-02", "2024-05-02"))["brackets"]["unknown"]["unknown"] == 1
    assert report.to_dict(build(store_dir, "2024-06-01", "2024-06-30"))["visits"] == 0


def test_csv_is_one_tidy_table(store_dir):
    rows = list(csv.DictReader(io.StringIO(report.to_csv(build(store_dir, "2024-05-01", "2024-05-01")))))
    assert set(rows[0]) == {"section", "key", "group", "value"}
    value = {(r["section"], r["key"], r["group"]): r["value"] for r in rows}
    assert value[("totals", "visits", "")] == "4"
    assert value[("brackets", "18-24", "male")] == "1"
    assert value[("hourly", "09", "visits")] == "3"
    assert value[("dwell_distribution", "30-60 s", "visits")] == "1"


def test_html_is_self_contained_with_plots(store_dir):
    page = report.to_html(build(store_dir, "2024-05-01", "2024-05-01"))
    assert "http://" not in page and "https://" not in page  # works offline
    images = page.split('src="data:image/png;base64,')[1:]
    assert len(images) == 4
    png = base64.b64decode(images[0].split('"')[0])
    assert png.startswith(b"\x89PNG")
    assert "<td>visits (OTS)</td><td>4</td>" in page
    assert "75.0%" in page


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime.kiosk", "report", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_command_line_formats(store_dir, tmp_path):
    proc = run_report("--data-dir", str(store_dir), "--from", "2024-05-01", "--to", "2024-05-02", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["visits"] == 5 and d["brackets"]["18-24"]["female"] == 1
    for fmt in ("csv", "html"):
        out = tmp_path / f"report.{fmt}"
        proc = run_report("--data-dir", str(store_dir), "--from", "2024-05-01", "--format", fmt, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        text = out.read_text()
        assert ("totals,visits,,5" in text) if fmt == "csv" else text.startswith("<!doctype html>")


@pytest.mark.parametrize("args, message", [
    (["--from", "2024-05-40"], "not an ISO date or time"),
    (["--from", "2024-05-02", "--to", "2024-05-01T12:00"], "the report period is empty"),
])
def test_bad_dates_are_one_line(store_dir, args, message):
    proc = run_report("--data-dir", str(store_dir), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_missing_store_is_one_line(tmp_path):
    proc = run_report("--data-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: no kiosk store in {tmp_path / 'nowhere'} (expected {tmp_path / 'nowhere' / 'kiosk.sqlite3'})"


def test_custom_brackets_are_reported(tmp_path):
    with KioskStore.open(tmp_path, now=at(1, 8), brackets=AgeBrackets.parse("30,60")) as store:
        store.add_visits([visit(1, at(1, 9), 5.0, 1.0, 1, "30-59", "male")])
    d = report.to_dict(build(tmp_path, "2024-05-01", "2024-05-01"))
    assert list(d["brackets"]) == ["under 30", "30-59", "60+"]


def test_a_report_on_one_camera_of_several(tmp_path):
    with KioskStore.open(tmp_path, StoreOptions(retention_days=None), now=at(1, 8)) as store:
        store.add_visits(VISITS[:3], camera="entrance")
        # the other camera's tracker numbers its people from 1 too
        store.add_visits([visit(1, at(1, 9, 6), 20.0, 5.0, 2, "18-24", "female")], camera="aisle")
    whole = report.to_dict(build(tmp_path, "2024-05-01", "2024-05-01"))
    assert whole["camera"] is None and whole["visits"] == 4
    assert whole["cameras"] == {"aisle": {"visits": 1, "viewers": 1}, "entrance": {"visits": 3, "viewers": 2}}
    assert "<h2>Cameras</h2>" in report.to_html(build(tmp_path, "2024-05-01", "2024-05-01"))
    proc = run_report("--data-dir", str(tmp_path), "--from", "2024-05-01", "--to", "2024-05-01", "--camera", "aisle", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert ["period", "camera", "", "aisle"] in rows and ["totals", "visits", "", "1"] in rows
    assert ["brackets", "18-24", "female", "1"] in rows and ["cameras", "entrance", "visits", "3"] not in rows
    proc = run_report("--data-dir", str(tmp_path), "--camera", "lobby")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: no camera 'lobby' in the kiosk store {tmp_path / 'kiosk.sqlite3'} (cameras: aisle, entrance)"]
