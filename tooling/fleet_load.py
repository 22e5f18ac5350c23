"""Load test of the fleet's central store: N kiosks forwarding a day of visits each.

    python -m tooling.fleet_load --kiosks 500 --visits 2000 --workers 8 --week

Every kiosk is a real KioskStore (SQLite, outbox on) filled with a day of generated
visits (opening hours 08:00-22:00, ages and genders at random), registered in the
central store with its own login, and forwarded by the real Forwarder; `--workers`
kiosks forward at once. On a throwaway local PostgreSQL (tooling/local_postgres.py)
unless --store names a server (its owner's URL). Prints, as JSON and in words:

* ingest: rows/s and visits/s into the central store (all kiosks' backlogs drained);
* uplink: bytes one kiosk sends and receives per hour of typical traffic, counted on
  the wire through a relay: the kiosk forwards every 10 s while its visits arrive;
* query latency, p50/p99 of the dashboard's whole "week" view (every figure the page
  shows) across all kiosks and for one site. With --week, the day each kiosk forwarded
  is copied server-side onto the six days before it, so the week holds 7 days of rows
  (ingest is measured on the forwarded day alone);
* size: the database's bytes per kiosk per month of data (VACUUM ANALYZEd first).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from realtime.fleet.forwarder import Forwarder, ForwarderOptions
from realtime.fleet.migrations import migrate
from realtime.fleet.roles import add_kiosk
from realtime.fleet.urls import create_engine
from realtime.kiosk.store import KioskStore, StoreOptions
from realtime.kiosk.visits import GENDERS, AgeBrackets, Visit

DAY = 86400.0
OPEN_H, CLOSE_H = 8, 22


def day_of_visits(rng: random.Random, n: int, day_start: float, first_track: int = 1) -> list[Visit]:
    brackets = AgeBrackets()
    out = []
    for i in range(n):
        start = day_start + rng.uniform(OPEN_H, CLOSE_H) * 3600.0
        dwell = rng.expovariate(1 / 12.0) + 2.0
        attention = dwell * rng.random() * (rng.random() < 0.6)
        age = min(90.0, max(3.0, rng.gauss(38, 16)))
        out.append(Visit(
            track_id=first_track + i, start=start, end=start + dwell, dwell_s=dwell, attention_s=attention,
            glances=int(attention > 0.5) + int(attention > 5), age=age, age_std=4.0, bracket=brackets.label(age),
            gender=rng.choice(GENDERS[:2]) if rng.random() < 0.95 else GENDERS[2], gender_confidence=rng.uniform(0.55, 1.0),
        ))
    return sorted(out, key=lambda v: v.end)


def make_store(folder: Path, visits: list[Visit], day_start: float) -> Path:
    store = KioskStore.open(folder, StoreOptions(outbox=True, retention_days=None), source="camera", now=day_start)
    try:
        store.add_visits(visits, now=day_start + DAY - 1)
        store.tick(0, 0, now=day_start + DAY - 1, force=True)
    finally:
        store.close(now=day_start + DAY)
    return folder


# ---------------------------------------------------------------------- uplink relay


class CountingRelay:
    """A TCP relay on loopback that counts the bytes each way: the uplink, measured on the wire."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


def measure_uplink(admin_url: str, port: int, folder: Path, visits_per_day: int, day_start: float, interval_s: int) -> dict[str, float]:
    """One kiosk's hour of typical traffic (the day's average rate), forwarded every interval_s through the relay."""
    kiosk = f"uplink-{interval_s}s"
    login = add_kiosk(admin_url, kiosk, site="probe")
    relay = CountingRelay(port)
    url = login.url_for(admin_url).replace(f"127.0.0.1:{port}", f"127.0.0.1:{relay.port}")
    rng = random.Random(99)
    per_hour = visits_per_day / (CLOSE_H - OPEN_H)
    hour = day_start + 12 * 3600.0
    visits = [v for v in day_of_visits(rng, int(per_hour * 24), day_start) if hour <= v.end < hour + 3600.0][: round(per_hour)]
    store = KioskStore.open(folder, StoreOptions(outbox=True, heartbeat_s=0.0), source="camera", now=hour)
    forwarder = Forwarder.create_from_options(ForwarderOptions(folder, url, kiosk, site="probe", location="door"))
    passes = 3600 // interval_s
    try:
        forwarder.drain()  # the run's start and the kiosk's first contact: not part of the hour
        relay.up = relay.down = 0
        track = 0
        for tick in range(passes):
            t = hour + (tick + 1) * float(interval_s)
            due = [v for v in visits[track:] if v.end <= t]
            track += len(due)
            if due:
                store.add_visits(due, now=t)
            store.tick(1, 1, now=t, force=True)  # the heartbeat a kiosk writes every pass
            forwarder.drain()
        up, down = relay.up, relay.down
    finally:
        store.close(now=hour + 3600.0)
        forwarder.close(final_s=0)
        relay.close()
    return {"interval_s": interval_s, "visits_in_hour": len(visits), "passes": passes, "up_bytes_per_hour": up, "down_bytes_per_hour": down}


# ---------------------------------------------------------------------- queries


def copy_onto_week(admin_url: str, day_start: float) -> None:
    """The forwarded day's aggregates and visits copied onto the six days before it (server-side)."""
    from sqlalchemy import text

    engine = create_engine(admin_url)
    with engine.begin() as conn:
        # row by row through the rollup triggers this takes many minutes: the hours are
        # summed once at the end instead, as migration 3 does for existing rows
        conn.execute(text("ALTER TABLE minute_stats DISABLE TRIGGER roll_up"))
        conn.execute(text("ALTER TABLE minute_hist DISABLE TRIGGER roll_up"))
        for d in range(1, 7):
            shift = int(d * DAY)
            conn.execute(text(
                "INSERT INTO minute_stats SELECT kiosk_id, minute - :s, camera, bracket, gender, visits, viewers, glances, dwell_s, attention_s"
                " FROM minute_stats WHERE minute >= :t0"), {"s": shift, "t0": int(day_start)})
            conn.execute(text(
                "INSERT INTO minute_hist SELECT kiosk_id, minute - :s, camera, metric, bin, count FROM minute_hist WHERE minute >= :t0"),
                {"s": shift, "t0": int(day_start)})
            conn.execute(text(
                "INSERT INTO visits SELECT kiosk_id, id + :k, run_id + :k, camera, track_id, start - :s, \"end\" - :s, dwell_s, attention_s,"
                " glances, age, age_std, bracket, gender, gender_confidence, ended FROM visits WHERE start >= :t0"),
                {"s": float(shift), "k": d * 10_000_000, "t0": day_start})
        conn.execute(text("ALTER TABLE minute_stats ENABLE TRIGGER roll_up"))
        conn.execute(text("ALTER TABLE minute_hist ENABLE TRIGGER roll_up"))
        stats = "SUM(visits), SUM(viewers), SUM(glances), SUM(dwell_s), SUM(attention_s)"
        conn.execute(text(
            f"INSERT INTO hour_stats SELECT kiosk_id, minute - minute % 3600, camera, bracket, gender, {stats}"
            " FROM minute_stats WHERE minute < :t0 GROUP BY 1, 2, 3, 4, 5"), {"t0": int(day_start)})
        conn.execute(text(
            "INSERT INTO hour_hist SELECT kiosk_id, minute - minute % 3600, camera, metric, bin, SUM(count)"
            " FROM minute_hist WHERE minute < :t0 GROUP BY 1, 2, 3, 4, 5"), {"t0": int(day_start)})
    engine.dispose()


def time_queries(url: str, now: float, repeats: int, **scope: str) -> dict[str, float]:
    from realtime.kiosk.dashboard import dashboard_data
    from realtime.kiosk.queries import StoreReader

    reader = StoreReader(url, **scope)
    dashboard_data(reader, "week", now=now)  # warm the server's cache, as a dashboard in use has it
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        dashboard_data(reader, "week", now=now)
        seconds.append(time.perf_counter() - t)
    seconds.sort()
    return {"p50_ms": round(1000 * statistics.median(seconds), 1), "p99_ms": round(1000 * seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))], 1)}


def database_bytes(admin_url: str) -> int:
    from sqlalchemy import text

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        size = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
    engine.dispose()
    return size


def table_bytes(admin_url: str) -> dict[str, int]:
    """Each table's bytes with its indexes and TOAST, largest first."""
    from sqlalchemy import text

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC")).all()
    engine.dispose()
    return {str(name): int(n) for name, n in rows}


# ---------------------------------------------------------------------- main


def run(args: argparse.Namespace, admin_url: str, port: int, work: Path) -> dict[str, Any]:
    migrate(admin_url)
    empty = database_bytes(admin_url)
    # yesterday, local midnight: the dashboard's week ends today
    today = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
    day_start = today - DAY
    ids = [f"k{i:04d}" for i in range(args.kiosks)]
    t = time.perf_counter()
    logins = {k: add_kiosk(admin_url, k, site=f"site{i % args.sites:02d}", location=f"loc{i % 3}").url_for(admin_url) for i, k in enumerate(ids)}
    register_s = time.perf_counter() - t

    def build(i: int) -> Path:
        return make_store(work / ids[i], day_of_visits(random.Random(i), args.visits, day_start), day_start)

    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(build, range(args.kiosks)))
    build_s = time.perf_counter() - t

    def forward(i: int) -> int:
        with Forwarder.create_from_options(ForwarderOptions(folders[i], logins[ids[i]], ids[i])) as f:
            return f.drain()

    t = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        rows = sum(pool.map(forward, range(args.kiosks)))
    ingest_s = time.perf_counter() - t
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    visits = args.kiosks * args.visits
    out: dict[str, Any] = {
        "kiosks": args.kiosks, "visits_per_kiosk": args.visits, "sites": args.sites, "workers": args.workers,
        "register_s": round(register_s, 1), "build_local_stores_s": round(build_s, 1),
        "ingest": {"rows": rows, "seconds": round(ingest_s, 1), "rows_per_s": round(rows / ingest_s), "visits_per_s": round(visits / ingest_s)},
    }
    print(json.dumps(out), file=sys.stderr, flush=True)
    out["uplink"] = [measure_uplink(admin_url, port, work / f"uplink{i}", args.visits, day_start, i) for i in (10, 30, 60)]
    days = 1
    if args.week:
        copy_onto_week(admin_url, day_start)
        days = 7
    print(json.dumps(out["uplink"]), file=sys.stderr, flush=True)
    size = database_bytes(admin_url) - empty
    out["size"] = {"data_bytes": size, "days": days, "bytes_per_kiosk_month": round(size / args.kiosks / days * 30), "tables": table_bytes(admin_url)}
    now = today + 12 * 3600.0
    out["week_view_all_kiosks"] = time_queries(admin_url, now, args.repeats)
    out["week_view_one_site"] = time_queries(admin_url, now, args.repeats, site="site00")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kiosks", type=int, default=50)
    p.add_argument("--visits", type=int, default=2000, help="visits per kiosk in its day")
    p.add_argument("--sites", type=int, default=20)
    p.add_argument("--workers", type=int, default=8, help="kiosks forwarding at once")
    p.add_argument("--repeats", type=int, default=30, help="timed runs of each dashboard view")
    p.add_argument("--week", action="store_true", help="copy the day onto the six before it before timing the week view")
    p.add_argument("--store", help="an empty central store's owner URL (default: a throwaway local PostgreSQL)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-load-"))
    try:
        if args.store:
            from sqlalchemy.engine import make_url

            out = run(args, args.store, make_url(args.store).port or 5432, work)
        else:
            from tooling.local_postgres import LocalPostgres

            with LocalPostgres.start() as pg:
                # the server as a production one runs: synchronous commits (the forwarder asks for them anyway)
                pg.psql("ALTER SYSTEM SET synchronous_commit = on")
                pg.psql("SELECT pg_reload_conf()")
                out = run(args, pg.url(), pg.port, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
