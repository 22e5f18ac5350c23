"""The kiosk store after a crash, and a store file that is not ours.

* kill -9 of a real kiosk process while a person is in view: the visit in progress is
  kept (closed as `crashed` at the next start) with its dwell up to the last second.
* checkpoints of open visits never count twice: a run that ends normally replaces them
  with the final visit; a store of the previous schema opens and upgrades.
* a foreign file named as the store is refused before anything touches it.
* a camera gap still open when the run stops is recorded.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from realtime.analyzer import FrameResult
from realtime.kiosk.session import KioskSession
from realtime.kiosk.queries import StoreReader
from realtime.kiosk.store import APPLICATION_ID, DEFAULT_CAMERA, SCHEMA_VERSION, KioskStore, StoreError, StoreOptions, store_file
from realtime.kiosk.visits import VisitRules
from tests.kiosk_results import FPS, T0, Clock, face, summary
from realtime.paths import ROOT
from realtime.sources import LiveStats
from realtime.errors import UserError
from tests.conftest import WEBCAM, run_cli



def sql(data_dir: Path, query: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(store_file(data_dir), timeout=10)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()




def feed(session: KioskSession, clock: Clock, first: int, last: int) -> None:
    """Frames first..last (inclusive) of one person, track 1, in real time."""
    for i in range(first, last + 1):
        clock.t = T0 + i / FPS
        session.frame(FrameResult(i, i / FPS, [face(1)], []))


def every_frame(tmp_path: Path) -> KioskStore:
    # a heartbeat at every frame makes the checkpoints of a unit test deterministic
    return KioskStore.open(tmp_path, StoreOptions(heartbeat_s=0.0), now=T0)


def die(store: KioskStore) -> None:
    """What kill -9 leaves: no close, the lock goes with the process."""
    store._conn.close()
    store._lock.close()


# ------------------------------------------------------------ a real kill -9 mid-visit


def read_frames(path: Path) -> list[dict]:
    # a line cut by the kill is not a frame
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def first_seen(frames: list[dict], track_id: int) -> float:
    return next(f["time"] for f in frames if any(x["track_id"] == track_id for x in f["faces"]))


def test_kill_9_mid_visit_keeps_the_visit_up_to_the_last_second(tmp_path, model_path):
    data_dir = tmp_path / "store"
    frames_path = tmp_path / "frames.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    args = ["--source", str(WEBCAM), "--kiosk", "--data-dir", str(data_dir), "--model", str(model_path),
            "--no-display", "--quiet", "--frames", str(frames_path)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_camera.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # (wall time, video time of the last frame written) while the kiosk runs
    progress: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 240
        track = None
        while time.monotonic() < deadline and proc.poll() is None:
            frames = read_frames(frames_path) if frames_path.exists() else []
            if frames:
                progress.append((time.time(), frames[-1]["time"]))
                ids = [f["track_id"] for f in frames[-1]["faces"]]
                # the person has been in view for 4 s of video and still is, and we have
                # watched the kiosk work for over a second
                if ids and frames[-1]["time"] - first_seen(frames, ids[0]) >= 4.0 and progress[-1][0] - progress[0][0] > 1.2:
                    track = ids[0]
                    break
            time.sleep(0.05)
        assert track is not None and proc.poll() is None, f"the kiosk never saw the person for 4 s: {proc.stderr.read() if proc.poll() is not None else ''}"
        time.sleep(0.7)  # between two heartbeats, not just after one
        assert proc.poll() is None, "the video ended before the kill"
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stderr.close()

    frames = read_frames(frames_path)
    seen = [f["time"] for f in frames if any(x["track_id"] == track for x in f["faces"])]
    dt = 1 / 25  # the clip's frame interval
    dwell_at_kill = seen[-1] - seen[0] + dt
    # how far the video had got a second before the kill, by our own samples
    before = [t for wall, t in progress if wall <= killed_at - 1.0]
    assert before, "the kiosk was killed less than a second after it started writing"
    dwell_a_second_before = max(t for t in seen if t <= before[-1]) - seen[0] + dt

    # the next start closes the checkpoint of the dead run
    KioskStore.open(data_dir).close()
    KioskStore.open(data_dir).close()  # and only once
    rows = sql(data_dir, "SELECT track_id, dwell_s, ended FROM visits WHERE track_id = ?", (track,))
    assert len(rows) == 1, rows
    _, dwell, ended = rows[0]
    print(f"kill -9: dwell {dwell_a_second_before:.2f} s a second before the kill, {dwell_at_kill:.2f} s at it, {dwell:.2f} s stored")
    assert ended == "crashed"
    assert dwell_a_second_before - 0.05 <= dwell <= dwell_at_kill + 0.05
    reader = StoreReader(data_dir)
    visits = reader.visits(0, time.time() + 60)
    assert track in [v.track_id for v in visits]
    assert reader.totals(0, time.time() + 60).visits == len(visits)  # counted once
    assert [r[0] for r in sql(data_dir, "SELECT stop_reason FROM runs ORDER BY id")] == ["crashed", "stopped", "stopped"]
    assert sql(data_dir, "SELECT visits FROM runs WHERE id = 1") == [(len(visits),)]
    assert sql(data_dir, "PRAGMA integrity_check") == [("ok",)]


# ------------------------------------------------------------ checkpoints, in process


def test_an_open_visit_is_checkpointed_and_closed_as_crashed_at_the_next_start(tmp_path):
    clock = Clock(T0)
    store = every_frame(tmp_path)
    session = KioskSession(store, VisitRules(), FPS, clock=clock)
    feed(session, clock, 0, 59)  # six seconds in view, then the process dies
    die(store)
    assert StoreReader(tmp_path).visits(0, T0 + 100) == []  # still open: not a visit yet

    with KioskStore.open(tmp_path, now=T0 + 100):
        pass
    (visit,) = StoreReader(tmp_path).visits(0, T0 + 100)
    assert visit.track_id == 1
    assert visit.start == pytest.approx(T0)
    assert visit.dwell_s == pytest.approx(6.0)
    assert visit.gender == "male" and visit.bracket == "35-44" and visit.age == 40
    assert visit.glances == 1 and visit.attention_s == pytest.approx(6.0)
    assert sql(tmp_path, "SELECT ended FROM visits") == [("crashed",)]
    totals = StoreReader(tmp_path).totals(0, T0 + 100)
    assert (totals.visits, totals.viewers) == (1, 1) and totals.dwell_s == pytest.approx(6.0)
    assert sql(tmp_path, "SELECT COUNT(*) FROM open_visits") == [(0,)]
    assert sql(tmp_path, "SELECT stop_reason, visits FROM runs ORDER BY id") == [("crashed", 1), ("stopped", 0)]


def test_a_person_in_view_shorter_than_the_minimum_dwell_is_not_checkpointed(tmp_path):
    clock = Clock(T0)
    store = every_frame(tmp_path)
    session = KioskSession(store, VisitRules(min_dwell_s=2.0), FPS, clock=clock)
    feed(session, clock, 0, 14)  # 1.5 s: a passer-by
    die(store)
    KioskStore.open(tmp_path, now=T0 + 100).close()
    assert StoreReader(tmp_path).totals(0, T0 + 100).visits == 0


def test_a_visit_that_ends_normally_counts_once(tmp_path):
    clock = Clock(T0)
    store = every_frame(tmp_path)
    session = KioskSession(store, VisitRules(), FPS, clock=clock)
    feed(session, clock, 0, 49)
    assert sql(tmp_path, "SELECT track_id FROM open_visits") == [(1,)]
    # the person leaves: the tracker's summary replaces the checkpoint
    clock.t = T0 + 5.0
    session.frame(FrameResult(50, 5.0, [], [summary(1, 0.0, 4.9)]))
    clock.t = T0 + 5.1
    session.frame(FrameResult(51, 5.1, [], []))
    assert sql(tmp_path, "SELECT COUNT(*) FROM open_visits") == [(0,)]
    session.final([])
    store.close(now=clock.t)
    assert sql(tmp_path, "SELECT COUNT(*) FROM open_visits") == [(0,)]
    assert sql(tmp_path, "SELECT track_id, ended FROM visits") == [(1, "left")]
    # a restart finds nothing to close
    KioskStore.open(tmp_path, now=T0 + 100).close()
    assert StoreReader(tmp_path).totals(0, T0 + 100).visits == 1
    assert sql(tmp_path, "SELECT SUM(count) FROM minute_hist WHERE metric = 'dwell'") == [(1,)]


def test_people_in_view_at_the_stop_replace_their_checkpoints(tmp_path):
    clock = Clock(T0)
    store = every_frame(tmp_path)
    session = KioskSession(store, VisitRules(), FPS, clock=clock)
    feed(session, clock, 0, 39)
    session.final([summary(1, 0.0, 3.9)])
    store.close("interrupted", now=clock.t)
    assert sql(tmp_path, "SELECT track_id, ended, dwell_s FROM visits") == [(1, "stopped", pytest.approx(4.0))]
    assert sql(tmp_path, "SELECT COUNT(*) FROM open_visits") == [(0,)]
    KioskStore.open(tmp_path, now=T0 + 100).close()
    assert StoreReader(tmp_path).totals(0, T0 + 100).visits == 1


def test_checkpoints_keep_up_when_visits_are_written_every_frame(tmp_path):
    # visits ending at every frame commit all the time; the heartbeat with the
    # checkpoint must still come once per heartbeat period
    clock = Clock(T0)
    store = KioskStore.open(tmp_path, StoreOptions(heartbeat_s=0.2), now=T0)
    session = KioskSession(store, VisitRules(min_dwell_s=0.0), FPS, clock=clock)
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 0.6:
        clock.t = T0 + i / FPS
        # track 1 stays; a new passer-by (track 1000 + i) is seen and leaves at every frame
        session.frame(FrameResult(i, i / FPS, [face(1)], [summary(1000 + i, i / FPS, i / FPS)]))
        i += 1
        time.sleep(0.01)
    assert sql(tmp_path, "SELECT track_id FROM open_visits") == [(1,)]
    store.close()


def test_open_visits_of_two_cameras_are_closed_as_crashed_with_their_cameras(tmp_path):
    clock = Clock(T0)
    store = every_frame(tmp_path)
    entrance = KioskSession(store, VisitRules(), FPS, clock=clock, camera="entrance")
    aisle = KioskSession(store, VisitRules(), FPS, clock=clock, camera="aisle")
    for i in range(60):
        clock.t = T0 + i / FPS
        # each camera's tracker calls its person track 1; the aisle's is seen for 3 s only
        entrance.frame(FrameResult(i, i / FPS, [face(1)], []))
        aisle.frame(FrameResult(i, i / FPS, [face(1)] if i < 30 else [], []))
    assert sql(tmp_path, "SELECT camera, track_id FROM open_visits ORDER BY camera") == [("aisle", 1), ("entrance", 1)]
    assert sql(tmp_path, "SELECT frames FROM runs") == [(120,)]  # both cameras' frames
    die(store)
    KioskStore.open(tmp_path, now=T0 + 100).close()
    assert sql(tmp_path, "SELECT camera, track_id, ended, dwell_s FROM visits ORDER BY camera") == [
        ("aisle", 1, "crashed", pytest.approx(3.0)), ("entrance", 1, "crashed", pytest.approx(6.0))]
    assert StoreReader(tmp_path).totals(0, T0 + 100).visits == 2
    assert StoreReader(tmp_path, camera="aisle").totals(0, T0 + 100).dwell_s == pytest.approx(3.0)
    assert sql(tmp_path, "SELECT stop_reason, visits FROM runs ORDER BY id") == [("crashed", 2), ("stopped", 0)]


def test_each_camera_is_checkpointed_once_per_heartbeat_however_often_the_others_tick(tmp_path):
    clock = Clock(T0)
    store = KioskStore.open(tmp_path, StoreOptions(heartbeat_s=0.2), now=T0)
    cameras = [KioskSession(store, VisitRules(min_dwell_s=0.0), FPS, clock=clock, camera=f"cam{n}") for n in range(3)]
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 0.6:
        clock.t = T0 + i / FPS
        for session in cameras:  # one thread calls every camera's session in turn
            session.frame(FrameResult(i, i / FPS, [face(1)], []))
        i += 1
        time.sleep(0.01)
    assert sql(tmp_path, "SELECT camera, track_id FROM open_visits ORDER BY camera") == [("cam0", 1), ("cam1", 1), ("cam2", 1)]
    assert sorted(c.camera for c in StoreReader(tmp_path).live(now=clock.t).cameras) == ["cam0", "cam1", "cam2"]
    store.close()


# ------------------------------------------------------------------- schema upgrade

# the schema of version 1, as shipped before open visits were checkpointed
SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, stopped_at REAL,
    stop_reason TEXT, source TEXT, pid INTEGER, frames INTEGER NOT NULL DEFAULT 0, visits INTEGER NOT NULL DEFAULT 0);
CREATE TABLE gaps (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, start REAL NOT NULL, end REAL NOT NULL, kind TEXT NOT NULL);
CREATE TABLE visits (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, track_id INTEGER NOT NULL, start REAL NOT NULL,
    end REAL NOT NULL, dwell_s REAL NOT NULL, attention_s REAL NOT NULL, glances INTEGER NOT NULL, age REAL, age_std REAL,
    bracket TEXT NOT NULL, gender TEXT NOT NULL, gender_confidence REAL, UNIQUE (run_id, track_id));
CREATE INDEX visits_start ON visits (start);
CREATE TABLE minute_stats (minute INTEGER NOT NULL, bracket TEXT NOT NULL, gender TEXT NOT NULL, visits INTEGER NOT NULL,
    viewers INTEGER NOT NULL, glances INTEGER NOT NULL, dwell_s REAL NOT NULL, attention_s REAL NOT NULL,
    PRIMARY KEY (minute, bracket, gender)) WITHOUT ROWID;
CREATE TABLE minute_hist (minute INTEGER NOT NULL, metric TEXT NOT NULL, bin INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (minute, metric, bin)) WITHOUT ROWID;
CREATE TABLE live (id INTEGER PRIMARY KEY CHECK (id = 1), run_id INTEGER NOT NULL, updated_at REAL NOT NULL,
    faces INTEGER NOT NULL, people INTEGER NOT NULL);
"""


def v1_rows() -> str:
    """A version-1 store's content: one visit, and a run that was killed."""
    minute = int(T0 // 60 * 60)
    return f"""
        INSERT INTO meta VALUES ('schema_version', '1'), ('created_at', '{T0!r}'), ('age_brackets', '18,25,35,45,55,65');
        INSERT INTO runs (id, started_at, heartbeat_at, source, pid, frames, visits) VALUES (1, {T0}, {T0 + 30}, 'cam', 1, 300, 1);
        INSERT INTO visits (run_id, track_id, start, end, dwell_s, attention_s, glances, age, age_std, bracket, gender,
            gender_confidence) VALUES (1, 4, {T0}, {T0 + 8}, 8.0, 3.0, 1, 30.0, 2.0, '25-34', 'female', 0.9);
        INSERT INTO minute_stats VALUES ({minute}, '25-34', 'female', 1, 1, 1, 8.0, 3.0);
        INSERT INTO minute_hist VALUES ({minute}, 'dwell', 1, 1), ({minute}, 'attention', 2, 1);
    """


WRITE_AND_DIE = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = WAL")
conn.executescript(sys.argv[2])
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # what a kiosk of version 1 leaves when killed
conn.close()
"""


def make_v1_store(data_dir: Path, killed: bool = False) -> None:
    make_old_store(data_dir, SCHEMA_V1 + v1_rows(), killed)


def make_old_store(data_dir: Path, script: str, killed: bool) -> None:
    data_dir.mkdir()
    subprocess.run([sys.executable, "-c", WRITE_AND_DIE, str(store_file(data_dir)), script, "kill" if killed else "close"], timeout=60)
    wal = store_file(data_dir).with_name(store_file(data_dir).name + "-wal")
    assert wal.exists() == killed  # killed, its content is still in the -wal file


@pytest.mark.parametrize("killed", [False, True], ids=["closed", "killed"])
def test_a_version_1_store_opens_and_upgrades(tmp_path, killed):
    data_dir = tmp_path / "v1"
    make_v1_store(data_dir, killed)
    clock = Clock(T0 + 60)
    store = KioskStore.open(data_dir, StoreOptions(heartbeat_s=0.0), now=T0 + 60)
    assert sql(data_dir, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    # the upgraded store works as a new one: checkpoints, crash recovery, aggregates
    session = KioskSession(store, VisitRules(), FPS, origin=T0 + 60, clock=clock)
    for i in range(30):
        clock.t = T0 + 60 + i / FPS
        session.frame(FrameResult(i, i / FPS, [face(1)], []))
    die(store)
    KioskStore.open(data_dir, now=T0 + 200).close()
    assert sql(data_dir, "SELECT run_id, track_id, ended FROM visits ORDER BY id") == [(1, 4, "left"), (2, 1, "crashed")]
    assert [r[0] for r in sql(data_dir, "SELECT stop_reason FROM runs ORDER BY id")] == ["crashed", "crashed", "stopped"]
    reader = StoreReader(data_dir)
    assert reader.totals(0, T0 + 300).visits == 2
    assert [v.track_id for v in reader.visits(0, T0 + 300)] == [4, 1]
    assert sql(data_dir, "PRAGMA integrity_check") == [("ok",)]


# the schema of version 2, exactly as the version-2 code wrote it (its SCHEMA): the last
# one with a single camera
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL,
    stop_reason TEXT,
    source TEXT,
    pid INTEGER,
    frames INTEGER NOT NULL DEFAULT 0,
    visits INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS visits (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    track_id INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    dwell_s REAL NOT NULL,
    attention_s REAL NOT NULL,
    glances INTEGER NOT NULL,
    age REAL,
    age_std REAL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    gender_confidence REAL,
    ended TEXT NOT NULL DEFAULT 'left',
    UNIQUE (run_id, track_id)
);
CREATE INDEX IF NOT EXISTS visits_start ON visits (start);
CREATE TABLE IF NOT EXISTS open_visits (
    run_id INTEGER NOT NULL,
    track_id INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    dwell_s REAL NOT NULL,
    attention_s REAL NOT NULL,
    glances INTEGER NOT NULL,
    age REAL,
    age_std REAL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    gender_confidence REAL,
    PRIMARY KEY (run_id, track_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_stats (
    minute INTEGER NOT NULL,
    bracket TEXT NOT NULL,
    gender TEXT NOT NULL,
    visits INTEGER NOT NULL,
    viewers INTEGER NOT NULL,
    glances INTEGER NOT NULL,
    dwell_s REAL NOT NULL,
    attention_s REAL NOT NULL,
    PRIMARY KEY (minute, bracket, gender)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_hist (
    minute INTEGER NOT NULL,
    metric TEXT NOT NULL,
    bin INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (minute, metric, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    faces INTEGER NOT NULL,
    people INTEGER NOT NULL
);
"""


def v2_rows() -> str:
    """A version-2 store's content, as its writer left it: a run that stopped with a visit
    and a camera gap, and a run killed with a person in view (checkpointed, same track id)."""
    minute = int(T0 // 60 * 60)
    visit = "4, {start}, {end}, 8.0, 3.0, 1, 30.0, 2.0, '25-34', 'female', 0.9"
    return f"""
        PRAGMA application_id = {APPLICATION_ID};
        INSERT INTO meta VALUES ('schema_version', '2'), ('created_at', '{T0!r}'), ('age_brackets', '18,25,35,45,55,65');
        INSERT INTO runs VALUES (1, {T0}, {T0 + 30}, {T0 + 30}, 'finished', 'cam', 1, 300, 1);
        INSERT INTO runs (id, started_at, heartbeat_at, source, pid, frames, visits) VALUES (2, {T0 + 60}, {T0 + 90}, 'cam', 2, 300, 0);
        INSERT INTO visits (run_id, track_id, start, end, dwell_s, attention_s, glances, age, age_std, bracket, gender,
            gender_confidence, ended) VALUES (1, {visit.format(start=T0, end=T0 + 8)}, 'left');
        INSERT INTO gaps (run_id, start, end, kind) VALUES (1, {T0 + 10}, {T0 + 12}, 'camera');
        INSERT INTO minute_stats VALUES ({minute}, '25-34', 'female', 1, 1, 1, 8.0, 3.0);
        INSERT INTO minute_hist VALUES ({minute}, 'dwell', 1, 1), ({minute}, 'attention', 2, 1);
        INSERT INTO open_visits VALUES (2, {visit.format(start=T0 + 70, end=T0 + 78)});
        INSERT INTO live VALUES (1, 2, {T0 + 90}, 1, 1);
    """


def schema_of(data_dir: Path) -> list[tuple]:
    """The store's tables and indexes, their SQL without its layout."""
    return [(kind, name, None if text is None else "".join(text.split()))
            for kind, name, text in sql(data_dir, "SELECT type, name, sql FROM sqlite_master ORDER BY name")]


@pytest.mark.parametrize("killed", [False, True], ids=["closed", "killed"])
def test_a_version_2_store_reads_as_one_camera_and_upgrades(tmp_path, killed):
    data_dir = tmp_path / "v2"
    make_old_store(data_dir, SCHEMA_V2 + v2_rows(), killed)
    # read as it is (a report on a kiosk not yet upgraded): all of it the default camera
    old = StoreReader(data_dir)
    assert old.schema_version == 2 and old.cameras() == (DEFAULT_CAMERA,)
    assert [(v.camera, v.track_id) for v in old.visits(0, T0 + 300)] == [(DEFAULT_CAMERA, 4)]
    assert [g.camera for g in old.gaps(0, T0 + 300)] == [DEFAULT_CAMERA]
    live = old.live(now=T0 + 91)
    assert (live.faces, live.fresh, [c.camera for c in live.cameras]) == (1, True, [DEFAULT_CAMERA])
    assert StoreReader(data_dir, camera=DEFAULT_CAMERA).totals(0, T0 + 300).visits == 1
    with pytest.raises(UserError, match="no camera 'door'"):
        StoreReader(data_dir, camera="door")

    store = KioskStore.open(data_dir, StoreOptions(heartbeat_s=0.0), now=T0 + 200)
    assert sql(data_dir, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert sql(data_dir, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    # the killed run's person in view became a visit of the one camera, apart from run 1's track 4
    assert sql(data_dir, "SELECT run_id, camera, track_id, ended FROM visits ORDER BY id") == [
        (1, DEFAULT_CAMERA, 4, "left"), (2, DEFAULT_CAMERA, 4, "crashed")]
    assert sql(data_dir, "SELECT camera, start FROM gaps") == [(DEFAULT_CAMERA, T0 + 10)]
    assert sql(data_dir, "SELECT camera, run_id FROM live") == [(DEFAULT_CAMERA, 2)]
    assert sql(data_dir, "SELECT SUM(visits) FROM minute_stats WHERE camera = ?", (DEFAULT_CAMERA,)) == [(2,)]
    assert [r[0] for r in sql(data_dir, "SELECT stop_reason FROM runs ORDER BY id")] == ["finished", "crashed", None]
    # a second camera writes beside the migrated rows
    clock = Clock(T0 + 200)
    session = KioskSession(store, VisitRules(), FPS, origin=T0 + 200, clock=clock, camera="door")
    feed(session, clock, 0, 29)
    session.final([summary(1, 0.0, 2.9)])
    store.close(now=clock.t)
    reader = StoreReader(data_dir)
    assert reader.cameras() == (DEFAULT_CAMERA, "door")
    assert sorted((v.camera, v.track_id) for v in reader.visits(0, T0 + 600)) == [(DEFAULT_CAMERA, 4), (DEFAULT_CAMERA, 4), ("door", 1)]
    assert reader.totals(0, T0 + 600).visits == 3
    assert StoreReader(data_dir, camera="door").totals(0, T0 + 600).visits == 1
    assert sql(data_dir, "PRAGMA integrity_check") == [("ok",)]
    # the same tables and indexes as a store made at this version
    KioskStore.open(tmp_path / "fresh", now=T0).close()
    assert schema_of(data_dir) == schema_of(tmp_path / "fresh")


def test_a_store_of_a_newer_version_is_refused_untouched(tmp_path):
    data_dir = tmp_path / "new"
    make_v1_store(data_dir)
    conn = sqlite3.connect(store_file(data_dir))
    conn.execute("PRAGMA journal_mode = DELETE")  # a clean file, no -wal or -shm beside it
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = snapshot(data_dir)
    with pytest.raises(StoreError, match="written by a newer version"):
        KioskStore.open(data_dir)
    assert snapshot(data_dir) == before


def test_a_stamped_store_of_a_newer_version_is_refused_before_anything_touches_it(tmp_path):
    KioskStore.open(tmp_path, now=T0).close()
    conn = sqlite3.connect(store_file(tmp_path))
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    (tmp_path / "kiosk.lock").unlink()
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"written by a newer version \(schema 99 > "):
        KioskStore.open(tmp_path)
    assert snapshot(tmp_path) == before  # no lock file, no journal mode change


# ------------------------------------------------------------------- foreign files


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def foreign_sqlite(path: Path, wal: bool) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE accounts (id INTEGER, owner TEXT)")
    conn.execute("INSERT INTO accounts VALUES (1, 'someone else')")
    conn.commit()
    conn.close()  # the last connection closes: no -wal or -shm stay


FOREIGN = {
    "sqlite": (lambda p: foreign_sqlite(p, wal=False), "it is a SQLite database but not a kiosk store"),
    "sqlite_wal": (lambda p: foreign_sqlite(p, wal=True), "it is a SQLite database but not a kiosk store"),
    "meta_table_only": (lambda p: sqlite3.connect(p).executescript("CREATE TABLE meta (key TEXT, value TEXT);"), "it is a SQLite database but not a kiosk store"),
    "text": (lambda p: p.write_text("my notes, not a database\n" * 50), "the file is not a usable SQLite database"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_file_is_refused_before_anything_touches_it(tmp_path, kind):
    make, message = FOREIGN[kind]
    make(store_file(tmp_path))
    os.utime(store_file(tmp_path), ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = snapshot(tmp_path)
    with pytest.raises(StoreError) as info:
        KioskStore.open(tmp_path)
    assert str(info.value) == f"cannot use the kiosk store {store_file(tmp_path)}: {message}"
    assert snapshot(tmp_path) == before  # same bytes, same mtime, no lock, -wal or -shm


def test_a_store_path_that_is_not_a_file_is_refused(tmp_path):
    os.mkfifo(store_file(tmp_path))  # opening it to read would block
    with pytest.raises(StoreError, match="it is not a regular file"):
        KioskStore.open(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [store_file(tmp_path).name]


def test_the_cli_refuses_a_foreign_store_with_one_line_and_leaves_it(tmp_path, model_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    foreign_sqlite(store_file(data_dir), wal=False)
    before = snapshot(data_dir)
    proc = run_cli("--source", str(WEBCAM), "--kiosk", "--data-dir", str(data_dir), "--model", str(model_path),
                   "--no-display", "--quiet", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot use the kiosk store {store_file(data_dir)}: it is a SQLite database but not a kiosk store"
    ]
    assert snapshot(data_dir) == before


def test_an_empty_file_becomes_a_store(tmp_path):
    store_file(tmp_path).touch()  # e.g. created by a provisioning script
    with KioskStore.open(tmp_path, now=T0):
        pass
    assert sql(tmp_path, "SELECT stop_reason FROM runs") == [("stopped",)]


# ------------------------------------------------------------ a gap open at the stop


def test_a_camera_gap_open_at_the_stop_is_recorded(tmp_path):
    clock = Clock(T0)
    stats = LiveStats()
    source = SimpleNamespace(stats=stats)  # what the session reads of a live source
    store = KioskStore.open(tmp_path, now=T0)
    session = KioskSession(store, VisitRules(), FPS, source=source, clock=clock)  # type: ignore[arg-type]
    session.frame(FrameResult(0, 0.0, [], []))
    stats.gaps.append((1.0, 2.0))  # a gap that closed
    clock.t = T0 + 3.0
    session.frame(FrameResult(1, 3.0, [], []))
    stats.open_gap_start = 4.0  # the camera went at 4 s and had not come back at the stop
    clock.t = T0 + 9.0
    stats.started = time.monotonic() - 9.0  # the source's clock agrees: 9 s since its start
    session.final([])
    store.close(now=clock.t)
    gaps = StoreReader(tmp_path).gaps(0, T0 + 100)
    assert [(g.start - T0, g.kind) for g in gaps] == [(1.0, "camera"), (4.0, "camera")]
    assert gaps[0].end - T0 == 2.0 and gaps[1].end - T0 == pytest.approx(9.0, abs=0.5)


def test_reports_refuse_a_foreign_store_with_one_line_and_leave_it(tmp_path):
    foreign_sqlite(store_file(tmp_path), wal=True)
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "realtime.kiosk", "report", "--data-dir", str(tmp_path), "--format", "json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot use the kiosk store {store_file(tmp_path)}: it is a SQLite database but not a kiosk store"
    ]
    assert snapshot(tmp_path) == before
