"""The kiosk fleet against a real PostgreSQL server on loopback (tests/pg_server.py).

Kiosk stores are real KioskStore files written as a kiosk writes them (visits from
tooling-free generated Visit values, or run_camera.py --kiosk on a generated scene of
real faces), forwarded by the real forwarder through per-kiosk database roles. The
server is stopped and restarted mid-run, a forwarder is killed with SIGKILL between
the central commit and the local mark, and every time the central rows must equal the
kiosks' own: nothing lost, nothing doubled.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from realtime.fleet.forwarder import Forwarder, ForwarderOptions, ForwardError
from realtime.fleet.migrations import LATEST, migrate
from realtime.fleet.roles import add_kiosk, add_reader
from realtime.fleet.urls import central_url
from realtime.kiosk.store import KioskStore, StoreOptions, _connect, store_file
from realtime.kiosk.tables import kiosk_tables
from realtime.kiosk.visits import GENDERS, AgeBrackets, Visit
from realtime.paths import ROOT
from tests.pg_server import postgres  # noqa: F401  (fixture)

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SUMS = "COUNT(*), COALESCE(SUM(dwell_s), 0)"


def engine(url: str) -> sa.Engine:
    return sa.create_engine(central_url(url), poolclass=sa.pool.NullPool)


def scalar(url: str, sql: str, **params) -> object:
    with engine(url).connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def new_database(pg, name: str) -> str:
    pg.psql(f"CREATE DATABASE {name}", database="postgres")
    return pg.url(database=name)


def make_visits(rng: random.Random, first_track: int, n: int, t: float) -> list[Visit]:
    brackets = AgeBrackets()
    out = []
    for i in range(n):
        start = t + rng.uniform(0, 600)
        dwell = rng.uniform(2, 40)
        age = rng.uniform(10, 80)
        out.append(Visit(
            track_id=first_track + i, start=start, end=start + dwell, dwell_s=dwell, attention_s=dwell * rng.random(),
            glances=rng.randint(0, 3), age=age, age_std=3.0, bracket=brackets.label(age),
            gender=rng.choice(GENDERS), gender_confidence=rng.uniform(0.5, 1.0),
        ))
    return out


def local_rows(data_dir: Path, sql: str) -> list[tuple]:
    conn = _connect(store_file(data_dir))
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def central_rows(url: str, sql: str, **params) -> list[tuple]:
    with engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params).fetchall()]


VISIT_COLS = "id, run_id, camera, track_id, start, \"end\", dwell_s, attention_s, glances, age, bracket, gender, ended"
STAT_COLS = "minute, camera, bracket, gender, visits, viewers, glances, dwell_s, attention_s"


def assert_central_equals_local(url: str, kiosk_id: str, data_dir: Path) -> None:
    """Every visit, aggregate and run of the kiosk's store, once, in the central store."""
    for table, cols, order in (("visits", VISIT_COLS, "id"), ("minute_stats", STAT_COLS, "minute, camera, bracket, gender"),
                               ("runs", "id, started_at, stopped_at, stop_reason, visits", "id"), ("gaps", "id, start, \"end\", kind", "id")):
        local = local_rows(data_dir, f"SELECT {cols} FROM {table} ORDER BY {order}")
        central = central_rows(url, f"SELECT {cols} FROM {table} WHERE kiosk_id = :k ORDER BY {order}", k=kiosk_id)
        assert central == local, f"{table} of {kiosk_id}: {len(central)} central rows against {len(local)} local"
    assert local_rows(data_dir, "SELECT COUNT(*) FROM outbox") == [(0,)]


@pytest.fixture(scope="module")
def fleet(postgres):  # noqa: F811
    """The module's central store, migrated, with a dashboard login."""
    url = postgres.url()
    migrate(url)
    return postgres, url, add_reader(url, "dash").url_for(url)


def register(admin: str, *kiosk_ids: str) -> dict[str, str]:
    """Kiosks registered in the central store: id -> the URL of its own login. Each test
    has its own kiosks: a kiosk id belongs to the first store that forwards under it."""
    return {k: add_kiosk(admin, k, site=k.split("-")[0]).url_for(admin) for k in kiosk_ids}


# ------------------------------------------------------------------ schema and roles


def test_migrations_from_empty_and_from_the_previous_version_keep_data(postgres):  # noqa: F811
    url = new_database(postgres, "migrations")
    assert migrate(url, 1).applied == range(1, 2)
    with engine(url).begin() as conn:  # a version-1 store with data in it
        conn.execute(sa.text("INSERT INTO kiosks (kiosk_id, role, created_at) VALUES ('old', 'kiosk_old', 1)"))
        conn.execute(sa.text("INSERT INTO minute_stats VALUES ('old', 60, 'default', '25-34', 'male', 3, 2, 4, 30.0, 12.5)"))
    result = migrate(url)
    assert (result.before, result.after) == (1, LATEST)
    assert migrate(url).applied == range(LATEST + 1, LATEST + 1)  # again: nothing to do
    assert central_rows(url, "SELECT version FROM schema_migrations ORDER BY version") == [(v,) for v in range(1, LATEST + 1)]
    assert central_rows(url, "SELECT kiosk_id, visits, dwell_s FROM minute_stats") == [("old", 3, 30.0)]
    # the migrated schema is the query layer's: same tables, columns and keys
    inspector = sa.inspect(engine(url))
    for table in kiosk_tables(central=True).metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert list(columns) == [c.name for c in table.columns], table.name
        for c in table.columns:
            assert columns[c.name]["nullable"] == c.nullable, (table.name, c.name)
            assert columns[c.name]["type"].python_type is c.type.python_type, (table.name, c.name)
        assert inspector.get_pk_constraint(table.name)["constrained_columns"] == [c.name for c in table.primary_key.columns]


def test_migrate_refuses_a_foreign_database_and_says_why_in_one_line(postgres, tmp_path):  # noqa: F811
    url = new_database(postgres, "not_ours")
    with engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE visits (x int)"))
    proc = subprocess.run([sys.executable, "-m", "realtime.fleet", "migrate", "--store", url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a fleet store" in proc.stderr and "Traceback" not in proc.stderr
    bad = postgres.url(password="wrong")
    proc = subprocess.run([sys.executable, "-m", "realtime.fleet", "migrate", "--store", bad], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "authentication failed" in proc.stderr
    assert "wrong" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def forward_store(tmp_path: Path, name: str, kiosk: str, url: str, seed: int, n: int = 40) -> Path:
    data_dir = tmp_path / name
    store = KioskStore.open(data_dir, StoreOptions(outbox=True), source="cam", now=T0)
    try:
        store.add_visits(make_visits(random.Random(seed), 1, n, T0), now=T0 + 700)
        store.add_gap(T0 + 100, T0 + 130)
        store.tick(1, 1, now=T0 + 750, force=True)
    finally:
        store.close(now=T0 + 800)
    with Forwarder.create_from_options(ForwarderOptions(data_dir, url, kiosk)) as forwarder:
        forwarder.drain()
    return data_dir


def test_each_kiosk_role_reads_and_writes_only_its_own_rows(fleet, tmp_path):
    _, admin, reader = fleet
    kiosks = register(admin, "paris-r", "lyon-r")
    forward_store(tmp_path, "p", "paris-r", kiosks["paris-r"], seed=1)
    forward_store(tmp_path, "l", "lyon-r", kiosks["lyon-r"], seed=2)
    paris = kiosks["paris-r"]
    for table in ("visits", "minute_stats", "minute_hist", "runs", "gaps", "cameras", "live", "kiosks"):
        assert central_rows(paris, f"SELECT DISTINCT kiosk_id FROM {table}") == [("paris-r",)], table
    with engine(paris).connect() as conn:
        assert conn.execute(sa.text("UPDATE visits SET age = 1 WHERE kiosk_id = 'lyon-r'")).rowcount == 0
        assert conn.execute(sa.text("UPDATE minute_stats SET visits = 0 WHERE kiosk_id = 'lyon-r'")).rowcount == 0
        conn.rollback()
        for sql, why in (
            ("INSERT INTO cameras VALUES ('lyon-r', 'fake')", "row-level security"),
            ("UPDATE visits SET kiosk_id = 'lyon-r'", "row-level security"),
            ("DELETE FROM visits", "permission denied"),
            ("UPDATE kiosks SET role = 'dash'", "permission denied"),
            ("DROP TABLE visits", "must be owner"),
            ("CREATE TABLE mine (x int)", "permission denied"),
        ):
            with pytest.raises(sa.exc.DBAPIError, match=why):
                conn.execute(sa.text(sql))
            conn.rollback()
    # the dashboard's login reads every kiosk and writes nothing
    assert central_rows(reader, "SELECT kiosk_id FROM visits WHERE kiosk_id LIKE '%-r' GROUP BY 1 ORDER BY 1") == [("lyon-r",), ("paris-r",)]
    with engine(reader).connect() as conn, pytest.raises(sa.exc.DBAPIError, match="permission denied"):
        conn.execute(sa.text("UPDATE visits SET age = 1"))
    # and the lyon kiosk's rows are intact
    assert scalar(admin, "SELECT COUNT(*) FROM visits WHERE kiosk_id = 'lyon-r' AND age = 1") == 0


def test_another_store_under_a_taken_kiosk_id_is_refused(fleet, tmp_path):
    _, admin, _ = fleet
    url = register(admin, "twice", "other-t")["twice"]
    forward_store(tmp_path, "first", "twice", url, seed=3, n=5)
    second = tmp_path / "second"
    KioskStore.open(second, StoreOptions(outbox=True), now=T0).close(now=T0 + 1)
    with Forwarder.create_from_options(ForwarderOptions(second, url, "twice")) as forwarder:
        with pytest.raises(ForwardError, match="already used by another kiosk store") as err:
            forwarder.send_once()
        assert err.value.permanent
    # a kiosk id the login does not own is refused, not written
    with Forwarder.create_from_options(ForwarderOptions(second, url, "other-t")) as forwarder:
        with pytest.raises(ForwardError, match="not registered in the central store for login"):
            forwarder.send_once()


# ------------------------------------------------------------------ nothing lost, nothing doubled


def test_two_kiosks_forward_through_a_server_restart(fleet, tmp_path):
    pg, admin, _ = fleet
    kiosks = register(admin, "paris-1", "lyon-1")
    names = {"paris-1": tmp_path / "paris", "lyon-1": tmp_path / "lyon"}
    stores = {k: KioskStore.open(d, StoreOptions(outbox=True), source="cam", now=T0) for k, d in names.items()}
    forwarders = {
        k: Forwarder.create_from_options(ForwarderOptions(d, kiosks[k], k, site=k.split("-")[0], location="hall",
                                                          interval_s=0.1, retry_min_s=0.1, retry_max_s=0.5, connect_timeout_s=2))
        for k, d in names.items()
    }
    rngs = {k: random.Random(i) for i, k in enumerate(names)}
    track = {k: 1 for k in names}
    errors_seen = []

    def write(rounds: int) -> None:
        for _ in range(rounds):
            for k, store in stores.items():
                n = rngs[k].randint(1, 6)
                store.add_visits(make_visits(rngs[k], track[k], n, T0 + track[k] * 5), now=T0 + 1000)
                store.tick(n, n, force=True, camera="default")
                track[k] += n
            time.sleep(0.02)

    try:
        for f in forwarders.values():
            f.start()
        write(25)
        pg.stop("immediate")  # as a crash or a lost network would
        write(25)  # the kiosks go on recording
        deadline = time.monotonic() + 20
        while not all(f.status().last_error for f in forwarders.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        errors_seen = [f.status().last_error for f in forwarders.values()]
        pending_while_down = {k: local_rows(d, "SELECT COUNT(*) FROM outbox")[0][0] for k, d in names.items()}
        pg.start_again()
        write(25)
    finally:
        for k, store in stores.items():
            store.close(now=T0 + 2000)
        statuses = {k: f.close(final_s=30) for k, f in forwarders.items()}
    assert all(e and "central store" in e for e in errors_seen), errors_seen
    assert all(n > 0 for n in pending_while_down.values())
    for k, d in names.items():
        assert statuses[k].last_error is None and statuses[k].backlog == 0, statuses[k]
        assert_central_equals_local(admin, k, d)
    sites = central_rows(admin, "SELECT kiosk_id, site, location, backlog, last_contact IS NOT NULL FROM kiosks WHERE kiosk_id IN ('paris-1', 'lyon-1') ORDER BY 1")
    assert sites == [("lyon-1", "lyon", "hall", 0, True), ("paris-1", "paris", "hall", 0, True)]


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from realtime.fleet.forwarder import Forwarder, ForwarderOptions
    def die(sent):  # the central store has committed the batch; the outbox still holds it
        os.kill(os.getpid(), signal.SIGKILL)
    options = ForwarderOptions(Path(sys.argv[1]), os.environ["AGEGENDER_CENTRAL"], sys.argv[2], batch_entries=25, on_sent=die)
    Forwarder.create_from_options(options).drain()
""")


def test_a_forwarder_killed_between_send_and_mark_doubles_nothing(fleet, tmp_path):
    _, admin, _ = fleet
    kiosks = {"paris-1": register(admin, "paris-k")["paris-k"]}
    data_dir = tmp_path / "killed"
    store = KioskStore.open(data_dir, StoreOptions(outbox=True), source="cam", now=T0)
    store.add_visits(make_visits(random.Random(7), 1, 60, T0), now=T0 + 700)
    store.close(now=T0 + 800)
    before = local_rows(data_dir, "SELECT COUNT(*) FROM outbox")[0][0]
    env = {**os.environ, "AGEGENDER_CENTRAL": kiosks["paris-1"]}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(data_dir), "paris-k"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # sent, not marked: the first batch is in both places
    assert local_rows(data_dir, "SELECT COUNT(*) FROM outbox")[0][0] == before
    sent_visits = scalar(admin, "SELECT COUNT(*) FROM visits WHERE kiosk_id = 'paris-k' AND start >= :t0 AND start < :t1", t0=T0, t1=T0 + 601)
    assert sent_visits > 0
    # the next forward sends it all again: the upserts leave every row as it is, once
    done = subprocess.run([sys.executable, "-m", "realtime.fleet", "forward", "--data-dir", str(data_dir), "--kiosk-id", "paris-k"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "nothing left to send" in done.stdout
    visits = local_rows(data_dir, f"SELECT {VISIT_COLS} FROM visits ORDER BY id")
    assert len(visits) == 60
    assert_central_equals_local(admin, "paris-k", data_dir)  # every row once, the aggregates not added twice


def test_forward_command_errors_are_one_line(fleet, tmp_path):
    pg, admin, _ = fleet
    kiosks = {"paris-1": register(admin, "paris-e")["paris-e"]}
    store = KioskStore.open(tmp_path / "s", StoreOptions(outbox=True), now=T0)
    store.close(now=T0 + 1)
    base = [sys.executable, "-m", "realtime.fleet", "forward", "--data-dir", str(tmp_path / "s")]
    cases = (
        (["--kiosk-id", "paris-e", "--central", f"postgresql://kiosk_paris_e:secret-pw@127.0.0.1:{pg.port + 1}/fleet"], "connection"),
        (["--kiosk-id", "nobody", "--central", kiosks["paris-1"]], "not registered"),
        (["--kiosk-id", "bad id!", "--central", kiosks["paris-1"]], "not a usable kiosk id"),
        (["--kiosk-id", "paris-e", "--central", "mysql://x@y/z"], "a central store is a PostgreSQL URL"),
    )
    for extra, why in cases:
        proc = subprocess.run([*base, *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert why in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "secret-pw" not in proc.stderr


def test_a_store_enables_forwarding_with_its_history_and_keeps_unsent_visits(tmp_path):
    """A kiosk that joins the fleet sends what it recorded before; retention spares
    visits the central store has not confirmed."""
    data_dir = tmp_path / "k"
    store = KioskStore.open(data_dir, StoreOptions(retention_days=1), now=T0)
    store.add_visits(make_visits(random.Random(1), 1, 10, T0), now=T0 + 700)
    store.close(now=T0 + 800)
    store = KioskStore.open(data_dir, StoreOptions(retention_days=1, outbox=True), now=T0 + 900)
    conn = _connect(store_file(data_dir))
    try:
        keys = {t: n for t, n in conn.execute("SELECT tbl, COUNT(*) FROM outbox GROUP BY tbl")}
        assert keys["visits"] == 10 and keys["runs"] == 2 and keys["cameras"] == 1 and keys["minutes"] >= 1
    finally:
        conn.close()
    # ten days on, retention drops nothing still waiting for the central store
    assert store.apply_retention(now=T0 + 10 * 86400) == 0
    store.close(now=T0 + 10 * 86400)
    # and a later run without forwarding still records for the next one that forwards
    store = KioskStore.open(data_dir, StoreOptions(), now=T0 + 11 * 86400)
    assert store.recording
    store.close()


# ------------------------------------------------------------------ kiosks end to end


def test_two_kiosks_on_real_video_forward_exactly_their_visits(fleet, tmp_path_factory, model_path):
    from tooling import scenes as synthetic

    _, admin, _ = fleet
    kiosks = register(admin, "paris-v", "lyon-v")
    folder = tmp_path_factory.mktemp("fleet_video")
    video = folder / "visitors.mp4"
    synthetic.render(synthetic.make_scenario(11, n_people=3, fps=15.0, seconds=12, face_px=(70, 140)), video)

    def run(kiosk: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "AGEGENDER_CENTRAL": kiosks[kiosk]}
        env.pop("DISPLAY", None)
        args = ["--source", str(video), "--kiosk", "--data-dir", str(folder / kiosk), "--model", str(model_path), "--quiet",
                "--no-display", "--kiosk-id", kiosk, "--site", kiosk.split("-")[0], "--location", "window"]
        return subprocess.run([sys.executable, str(ROOT / "run_camera.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)

    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip(kiosks, pool.map(run, kiosks)))
    for kiosk, proc in procs.items():
        assert proc.returncode == 0, proc.stderr
        assert "forwarded to the central store: all sent" in proc.stderr, proc.stderr
        assert kiosks[kiosk].split(":")[2].split("@")[0] not in proc.stderr + proc.stdout  # no password shown
        assert local_rows(folder / kiosk, "SELECT COUNT(*) FROM visits")[0][0] >= 2
        assert_central_equals_local(admin, kiosk, folder / kiosk)
        assert central_rows(admin, "SELECT location FROM kiosks WHERE kiosk_id = :k", k=kiosk) == [("window",)]


def test_hourly_rollups_give_the_figures_of_the_minutes(fleet, tmp_path):
    """The central reader takes whole hours from the rollups the triggers keep; every
    figure must equal the kiosk's own, read from its minutes, including after upserts
    that change minutes already sent (the triggers add the difference only)."""
    from realtime.kiosk.queries import StoreReader

    _, admin, _ = fleet
    url = register(admin, "roll-1")["roll-1"]
    data_dir = tmp_path / "roll"
    rng = random.Random(5)

    def spread(first_track: int, n: int) -> list[Visit]:
        return [replace_start(v, T0 + rng.uniform(0, 5 * 3600)) for v in make_visits(rng, first_track, n, T0)]

    store = KioskStore.open(data_dir, StoreOptions(outbox=True), source="cam", now=T0)
    with Forwarder.create_from_options(ForwarderOptions(data_dir, url, "roll-1")) as forwarder:
        store.add_visits(spread(1, 150), now=T0 + 6 * 3600)
        forwarder.drain()
        store.add_visits(spread(151, 150), now=T0 + 6 * 3600)  # into minutes already sent
        forwarder.drain()
        forwarder.drain()  # nothing new: a pass that upserts nothing changes nothing
    store.close(now=T0 + 6 * 3600)
    assert scalar(admin, "SELECT SUM(visits) FROM hour_stats WHERE kiosk_id = 'roll-1'") == 300
    local, central = StoreReader(data_dir), StoreReader(admin, kiosk="roll-1")
    for start, end in ((T0, T0 + 5 * 3600), (T0 + 1234.5, T0 + 4 * 3600 + 100), (T0 + 60, T0 + 3000), (T0 - 86400, T0 + 86400)):
        a, b = local.totals(start, end), central.totals(start, end)
        assert (a.visits, a.viewers, a.glances) == (b.visits, b.viewers, b.glances)
        assert a.dwell_s == pytest.approx(b.dwell_s, abs=1e-6) and a.attention_s == pytest.approx(b.attention_s, abs=1e-6)
        assert local.brackets(start, end) == central.brackets(start, end)
        assert local.histogram("dwell", start, end) == central.histogram("dwell", start, end)
        assert local.histogram("attention", start, end) == central.histogram("attention", start, end)
    week_local = local.timeline(T0 - 3 * 86400, T0 + 86400, 3600)
    week_central = central.timeline(T0 - 3 * 86400, T0 + 86400, 3600)
    assert [(x.start, x.visits, x.viewers) for x in week_local] == [(x.start, x.visits, x.viewers) for x in week_central]
    assert sum(x.visits for x in week_central) == 300


def replace_start(v: Visit, start: float) -> Visit:
    import dataclasses

    return dataclasses.replace(v, start=start, end=start + v.dwell_s)


def test_kiosk_fleet_options_are_checked_before_anything_runs(tmp_path):
    from tests.conftest import VIDEOS, run_cli

    clip = str(VIDEOS / "three_people_walking.gif")
    cases = (
        (["--site", "paris"], "--site needs --kiosk"),
        (["--kiosk", "--data-dir", str(tmp_path / "a"), "--site", "paris"], "--site needs --central"),
        (["--kiosk", "--data-dir", str(tmp_path / "b"), "--central", "postgresql://k:pw@127.0.0.1:1/fleet"], "needs --kiosk-id"),
        (["--kiosk", "--data-dir", str(tmp_path / "c"), "--central", "sqlite:///x", "--kiosk-id", "k"], "a central store is a PostgreSQL URL"),
        (["--kiosk", "--data-dir", str(tmp_path / "d"), "--central", "postgresql://k@h/f", "--kiosk-id", "a b"], "not a usable kiosk id"),
    )
    for extra, why in cases:
        proc = run_cli("--source", clip, "--no-display", *extra, timeout=120)
        assert proc.returncode == 2 and why in proc.stderr, (extra, proc.stderr)
        assert "Traceback" not in proc.stderr and "pw" not in proc.stderr
    assert not any((tmp_path / d).exists() for d in "abcd")  # refused before the store was made
