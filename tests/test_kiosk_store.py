"""The kiosk's SQLite store: durability settings, aggregates, retention, crashes, errors."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sqlite3
import time

import pytest

from realtime.kiosk.queries import GapRow, GenderCounts, RunRow, StoreReader, TimelineBucket, VisitRow
from realtime.kiosk.store import DEFAULT_CAMERA, KioskStore, StoreError, StoreOptions, minute_of, store_file
from realtime.kiosk.visits import Visit

NOW = 1_750_000_000.0  # a fixed "now" keeps minute boundaries predictable


def visit(track_id: int, start: float, dwell: float = 5.0, attention: float = 2.0, glances: int = 1, bracket: str = "25-34", gender: str = "female", age: float | None = 30.0) -> Visit:
    return Visit(track_id, start, start + dwell, dwell, attention, glances, age, 2.0, bracket, gender, 0.9)


def sql(data_dir, query, params=()):
    conn = sqlite3.connect(store_file(data_dir))
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def test_a_new_store_uses_wal_and_records_the_run(tmp_path):
    with KioskStore.open(tmp_path / "kiosk", source="cam0", now=NOW) as store:
        assert store.path.is_file()
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert store.options.heartbeat_s <= 1.0
        run_id = store.run_id
    runs = sql(tmp_path / "kiosk", "SELECT id, source, stop_reason, stopped_at IS NOT NULL FROM runs")
    assert runs == [(run_id, "cam0", "stopped", 1)]


def test_visits_and_their_aggregates(tmp_path):
    with KioskStore.open(tmp_path, now=NOW) as store:
        assert store.add_visits([
            visit(1, NOW, dwell=4, attention=0, glances=0),
            visit(2, NOW + 10, dwell=12, attention=3, bracket="18-24", gender="male"),
            visit(3, NOW + 70, dwell=40, attention=12, glances=2),
        ]) == 3
        # written again (a flush cut by a signal is redone): nothing counts twice
        assert store.add_visits([visit(3, NOW + 70, dwell=40, attention=12, glances=2)]) == 0
    reader = StoreReader(tmp_path)
    t = reader.totals(NOW - 60, NOW + 600)
    assert (t.visits, t.viewers, t.glances) == (3, 2, 3)
    assert t.dwell_s == pytest.approx(56) and t.attention_s == pytest.approx(15)
    brackets = reader.brackets(NOW - 60, NOW + 600)
    # every configured bracket in order, empty ones too, so charts keep their axes
    assert list(brackets) == ["under 18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
    assert brackets["18-24"] == GenderCounts(female=0, male=1, unknown=0)
    assert brackets["25-34"] == GenderCounts(female=2, male=0, unknown=0)
    assert sum(c.total for c in brackets.values()) == 3
    assert reader.histogram("dwell", NOW - 60, NOW + 600) == [1, 0, 1, 0, 1, 0, 0, 0]
    assert reader.histogram("attention", NOW - 60, NOW + 600) == [0, 0, 1, 0, 1, 0]
    timeline = reader.timeline(minute_of(NOW), minute_of(NOW) + 180, 60)
    assert [b.visits for b in timeline] == [2, 1, 0]
    assert timeline[0] == TimelineBucket(minute_of(NOW), 2, 1, 3.0, 16.0, 0.5)
    assert sum(h.visits for h in reader.hourly_profile(NOW - 3600, NOW + 3600)) == 3
    assert [v.track_id for v in reader.visits(NOW - 60, NOW + 600)] == [1, 2, 3]


def test_retention_drops_visit_rows_but_keeps_aggregates(tmp_path):
    day = 86400.0
    with KioskStore.open(tmp_path, StoreOptions(retention_days=7), now=NOW - 30 * day) as store:
        store.add_visits([visit(1, NOW - 30 * day), visit(2, NOW - 8 * day), visit(3, NOW - 1 * day)])
    with KioskStore.open(tmp_path, StoreOptions(retention_days=7), now=NOW):
        pass  # retention runs at every start (and hourly while running)
    reader = StoreReader(tmp_path)
    assert [v.track_id for v in reader.visits(0, NOW)] == [3]
    assert reader.totals(0, NOW).visits == 3  # the month's figures survive the rows


def test_no_retention_keeps_everything(tmp_path):
    with KioskStore.open(tmp_path, StoreOptions(retention_days=None), now=NOW) as store:
        store.add_visits([visit(1, NOW - 1000 * 86400)])
    assert len(StoreReader(tmp_path).visits(0, NOW)) == 1


def test_a_run_without_a_stop_is_marked_crashed_at_its_heartbeat(tmp_path):
    store = KioskStore.open(tmp_path, now=NOW)
    store.add_visits([visit(1, NOW)], now=NOW + 5)
    store.tick(faces=2, people=2, now=NOW + 7, force=True)
    # a kill -9: no close, the lock goes with the process
    store._conn.close()
    store._lock.close()
    with KioskStore.open(tmp_path, now=NOW + 100) as again:
        assert again.run_id == store.run_id + 1
    runs = sql(tmp_path, "SELECT id, stop_reason, stopped_at FROM runs ORDER BY id")
    assert runs[0] == (store.run_id, "crashed", NOW + 7)
    assert runs[1][1] == "stopped"
    assert StoreReader(tmp_path).totals(0, NOW + 100).visits == 1


def test_live_row_reports_people_only_while_fresh(tmp_path):
    store = KioskStore.open(tmp_path, now=NOW)
    store.tick(faces=3, people=4, now=NOW, force=True)
    reader = StoreReader(tmp_path)
    live = reader.live(now=NOW + 1)
    assert (live.faces, live.people, live.fresh, live.running) == (3, 4, True, True)
    assert reader.live(now=NOW + 60).faces == 0  # camera gone: no stale count
    store.close(now=NOW + 2)
    assert not reader.live(now=NOW + 2).running


def test_camera_gaps_are_recorded(tmp_path):
    with KioskStore.open(tmp_path, now=NOW) as store:
        store.add_gap(NOW + 10, NOW + 25)
    assert StoreReader(tmp_path).gaps(NOW, NOW + 100) == [GapRow(run_id=1, camera="default", start=NOW + 10, end=NOW + 25, kind="camera")]


def test_readers_return_typed_rows_of_what_was_written(tmp_path):
    written = [visit(1, NOW + 3600, dwell=30, attention=6), visit(2, NOW + 3700, age=None, bracket="unknown", gender="unknown")]
    with KioskStore.open(tmp_path, source="cam0", now=NOW) as store:
        store.add_visits(written, now=NOW + 3800)
    reader = StoreReader(tmp_path)
    rows = reader.visits(NOW, NOW + 7200)
    assert rows == list(reader.iter_visits(NOW, NOW + 7200, batch=1))
    for row, v in zip(rows, written, strict=True):
        assert isinstance(row, VisitRow) and (row.run_id, row.camera) == (1, DEFAULT_CAMERA)
        assert dataclasses.astuple(row)[2:] == dataclasses.astuple(v)[:-1]  # all but `ended`, which no reader shows
    (run,) = reader.runs(NOW, NOW + 7200)
    assert isinstance(run, RunRow) and (run.id, run.source, run.visits, run.stop_reason) == (1, "cam0", 2, "stopped")
    hours = [h for h in reader.hourly_profile(NOW, NOW + 7200) if h.visits]
    assert [(h.visits, h.viewers, h.attention_rate, h.average_dwell_s, h.average_attention_s) for h in hours] == [(2, 2, 1.0, 17.5, 4.0)]
    assert [(d.visits, d.viewers) for d in reader.daily(NOW, NOW + 7200)] == [(2, 2)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows[0].age = 99  # type: ignore[misc]


def _hold(data_dir, ready, release):
    store = KioskStore.open(data_dir)
    ready.set()
    release.wait(30)
    store.close()


def test_a_second_kiosk_on_the_same_data_dir_is_refused(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreError, match=f"in use by another kiosk process \\(pid {holder.pid}\\)"):
            KioskStore.open(tmp_path)
    finally:
        release.set()
        holder.join(30)
    KioskStore.open(tmp_path).close()  # free again once the holder is gone


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_a_data_dir_that_cannot_be_a_folder_is_one_clear_error(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    data_dir = blocker if where == "file" else blocker / "kiosk"
    with pytest.raises(StoreError) as info:
        KioskStore.open(data_dir)
    message = str(info.value)
    assert "\n" not in message and str(data_dir) in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_read_only_data_dir_is_one_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            KioskStore.open(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_a_foreign_database_is_refused_untouched(tmp_path):
    conn = sqlite3.connect(store_file(tmp_path))
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a kiosk store"):
        KioskStore.open(tmp_path)
    assert sql(tmp_path, "SELECT name FROM sqlite_master") == [("accounts",)]


def test_a_corrupt_store_file_is_one_clear_error(tmp_path):
    store_file(tmp_path).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        KioskStore.open(tmp_path)


def test_a_full_disk_stops_with_one_line_and_keeps_the_store_intact(tmp_path):
    store = KioskStore.open(tmp_path, StoreOptions(max_bytes=160 * 1024), now=NOW)
    written = 0
    with pytest.raises(StoreError) as info:
        for i in range(100_000):
            # a fresh minute per visit grows the aggregates too
            written += store.add_visits([visit(i, NOW + 60 * i)], now=NOW)
    assert str(info.value) == f"cannot write the kiosk store {store.path}: the disk is full"
    store.close()
    assert written > 50
    conn = sqlite3.connect(store_file(tmp_path))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM visits").fetchone()[0] == written
    # the failed transaction left no half: every stored visit has its aggregate
    assert conn.execute("SELECT SUM(visits) FROM minute_stats").fetchone()[0] == written
    conn.close()
    with KioskStore.open(tmp_path, now=NOW + 10):  # and the next start continues it
        pass


def test_reader_refuses_a_folder_without_a_store(tmp_path):
    from realtime.errors import UserError

    with pytest.raises(UserError, match="no kiosk store"):
        StoreReader(tmp_path)


def test_commits_are_frequent(tmp_path):
    store = KioskStore.open(tmp_path, now=NOW)
    assert store.tick(1, 1) is False  # just committed at open
    time.sleep(store.options.heartbeat_s + 0.05)
    assert store.tick(1, 1) is True
    store.close()
