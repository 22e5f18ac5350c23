"""The one query layer on the fleet's central PostgreSQL store (a real server on loopback).

Four kiosks in two sites write their own SQLite stores; their rows are copied into a
migrated central store with plain SQLAlchemy inserts (the forwarder has tests of its
own), and a further local store holds all of their visits at once. The same reader
methods must then give the same figures on both, overall and per site, location,
kiosk and camera; the report command and the dashboard (in headless Chromium) read the
central store as a dashboard role would.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select

from realtime.errors import UserError
from realtime.fleet.migrations import migrate
from realtime.fleet.roles import add_reader
from realtime.kiosk import report
from realtime.kiosk.dashboard import CENTRAL_NEEDS_TOKEN, DashboardServer, create_app
from realtime.kiosk.queries import QUIET_AFTER_S, STORE_ENV, SiteRow, StoreReader
from realtime.kiosk.store import KioskStore, StoreError, StoreOptions, minute_of, store_file
from realtime.kiosk.tables import kiosk_tables
from realtime.kiosk.visits import AgeBrackets, Visit
from realtime.paths import ROOT
from tests.pg_server import postgres  # noqa: F401  (the fixture)
from tests.test_kiosk_dashboard import _wait_text, browser, today_times  # noqa: F401  (browser: a fixture)

NOW = time.time()
DAY = 86400.0
DATA_TABLES = ("runs", "cameras", "gaps", "visits", "minute_stats", "minute_hist", "live")


@dataclasses.dataclass(frozen=True)
class Kiosk:
    kiosk_id: str
    site: str
    location: str
    last_contact: float | None
    age_brackets: str | None
    visits: dict[str, list[Visit]]  # by camera
    running: bool = False  # its run goes on (a fresh live row), else it stopped


def _visit(track_id: int, start: float, dwell: float, attention: float, bracket: str, gender: str) -> Visit:
    return Visit(track_id, start, start + dwell, dwell, attention, int(attention > 0), 30.0, 2.0, bracket, gender, 0.9)


def _fleet() -> list[Kiosk]:
    # today (within the dashboard's range), plus a few earlier days for the daily rows
    t = today_times(8, NOW)
    ids = iter(range(1, 100))  # one numbering: the combined local store keeps every visit apart

    def v(start: float, dwell: float, attention: float, bracket: str = "25-34", gender: str = "female") -> Visit:
        return _visit(next(ids), start, dwell, attention, bracket, gender)

    return [
        Kiosk("north-1", "north", "lobby", NOW - 20, "18,25,35,45,55,65", {
            "default": [v(t[0], 5, 2), v(t[1], 12, 0, "18-24", "male"), v(t[2], 40, 10), v(NOW - 2 * DAY - 3700, 9, 3)]}, running=True),
        Kiosk("north-2", "north", "door", NOW - 25, "30,60", {
            "entrance": [v(t[3], 7, 1, "65+", "male"), v(t[4], 20, 0)], "aisle": [v(t[5], 3, 3, "unknown", "unknown")]}),
        Kiosk("south-1", "south", "lobby", NOW - 2 * 3600, None, {"default": [v(t[6], 15, 5), v(NOW - DAY - 600, 30, 0)]}),
        Kiosk("south-2", "south", "street", None, None, {}),  # registered, never heard from
    ]


FLEET = _fleet()
ALL_VISITS = [visit for k in FLEET for vs in k.visits.values() for visit in vs]
RANGE = (NOW - 4 * DAY, NOW + 60)


def _write_local(data_dir: Path, kiosks: list[Kiosk]) -> KioskStore | None:
    """A local store with these kiosks' visits; left open (running) if one of them runs."""
    store = KioskStore.open(data_dir, StoreOptions(retention_days=None), now=NOW - 5 * DAY)
    for k in kiosks:
        for camera, visits in k.visits.items():
            store.add_visits(visits, camera=camera, now=NOW - 30)
            store.tick(faces=2 if k.running else 0, people=2, force=True, camera=camera, now=NOW - 30)
    store.add_gap(NOW - 900, NOW - 840, camera=next(iter(kiosks[0].visits), "default"))
    if any(k.running for k in kiosks):
        return store
    store.close(now=NOW - 30)
    return None


def _copy_to_central(data_dir: Path, kiosk_id: str, central_engine) -> None:
    """Every row of a local store into the central tables, under the kiosk's id."""
    local, central = kiosk_tables(), kiosk_tables(central=True)
    source = create_engine("sqlite://", creator=lambda: sqlite3.connect(store_file(data_dir)))
    with source.connect() as src, central_engine.begin() as dst:
        for name in DATA_TABLES:
            target = getattr(central, name)
            rows = [{**{c: v for c, v in r._mapping.items() if c in target.c}, "kiosk_id": kiosk_id} for r in src.execute(select(getattr(local, name)))]
            if rows:
                dst.execute(insert(target), rows)
    source.dispose()


@pytest.fixture(scope="module")
def fleet(postgres, tmp_path_factory):  # noqa: F811
    """(the central store's URL for a dashboard role, the combined local store's data dir)."""
    admin_url = postgres.url()
    migrate(admin_url)
    engine = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"))
    kiosks = kiosk_tables(central=True).kiosks
    open_stores = []
    with engine.begin() as conn:
        conn.execute(insert(kiosks), [
            {"kiosk_id": k.kiosk_id, "site": k.site, "location": k.location, "role": "kiosk_" + k.kiosk_id.replace("-", "_"),
             "created_at": NOW - 5 * DAY, "last_contact": k.last_contact, "backlog": 0 if k.last_contact else None,
             "age_brackets": k.age_brackets}
            for k in FLEET
        ])
    for k in FLEET:
        if k.visits:
            data_dir = tmp_path_factory.mktemp(k.kiosk_id)
            store = _write_local(data_dir, [k])
            _copy_to_central(data_dir, k.kiosk_id, engine)
            if store is not None:
                open_stores.append(store)
    engine.dispose()
    combined = tmp_path_factory.mktemp("combined")
    store = _write_local(combined, [k for k in FLEET if k.visits])
    if store is not None:
        open_stores.append(store)
    reader_url = add_reader(admin_url, "dash").url_for(admin_url)
    yield reader_url, combined
    for s in open_stores:
        s.close()


@pytest.fixture
def zone():
    """The process's local time zone set to UTC+05:30 for one test (half hours test the quarters)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_central_figures_equal_a_local_store_holding_the_same_rows(fleet, zone):
    url, combined = fleet
    central, local = StoreReader(url), StoreReader(combined)
    assert central.central and not local.central
    start, end = RANGE
    assert central.totals(start, end) == local.totals(start, end) and central.totals(start, end).visits == len(ALL_VISITS)
    assert central.brackets(start, end) == local.brackets(start, end)
    for metric in ("dwell", "attention"):
        assert central.histogram(metric, start, end) == local.histogram(metric, start, end)
    assert central.timeline(NOW - 3 * 3600, NOW, 900) == local.timeline(NOW - 3 * 3600, NOW, 900)
    assert central.camera_totals(start, end) == local.camera_totals(start, end)
    visits = central.visits(start, end)
    assert Counter(v.kiosk_id for v in visits) == {"north-1": 4, "north-2": 3, "south-1": 2}
    assert sorted(dataclasses.astuple(v)[:-1] for v in visits) == sorted(map(dataclasses.astuple, local.visits(start, end)))
    assert central.first_minute() == local.first_minute()
    # local hours and days, in a zone half an hour off UTC: as the visits' own local times say
    hourly, daily = central.hourly_profile(start, end), central.daily(start, end)
    assert hourly == local.hourly_profile(start, end) and daily == local.daily(start, end)
    by_hour = Counter(datetime.fromtimestamp(minute_of(v.start)).hour for v in ALL_VISITS)
    assert {h.hour: h.visits for h in hourly if h.visits} == dict(by_hour)
    by_day = Counter(datetime.fromtimestamp(minute_of(v.start)).strftime("%Y-%m-%d") for v in ALL_VISITS)
    assert [(d.date, d.visits) for d in daily] == sorted(by_day.items())


def test_site_location_kiosk_and_camera_narrow_every_figure(fleet):
    url, combined = fleet
    start, end = RANGE

    def count(**scope) -> int:
        reader = StoreReader(url, **scope)
        visits = reader.totals(start, end).visits
        assert len(reader.visits(start, end)) == visits == sum(c.total for c in reader.brackets(start, end).values())
        return visits

    assert count(site="north") == 7 and count(site="south") == 2
    assert count(location="lobby") == 6 and count(site="north", location="door") == 3
    assert count(kiosk="south-1") == 2 and count(kiosk="south-2") == 0
    assert count(camera="aisle") == 1 and count(site="north", camera="entrance") == 2
    assert StoreReader(url, site="north").cameras() == ("aisle", "default", "entrance")
    assert StoreReader(url, site="south").cameras() == ("default",)
    with pytest.raises(UserError, match=r"no site 'east' in the central store postgresql://dash@127\.0\.0\.1:\d+/fleet \(sites: north, south\)"):
        StoreReader(url, site="east")
    with pytest.raises(UserError, match=r"no location 'street' .*\(locations: door, lobby\)"):
        StoreReader(url, site="north", location="street")
    with pytest.raises(UserError, match=r"no camera 'entrance' .*\(cameras: default\)"):
        StoreReader(url, camera="entrance", site="south")
    with pytest.raises(UserError, match="narrow a central store"):
        StoreReader(combined, site="north")


def test_sites_kiosks_live_and_brackets(fleet):
    url, combined = fleet
    reader = StoreReader(url)
    start, end = RANGE
    assert reader.sites(start, end) == [SiteRow("north", 2, 7, 5, round(5 / 7, 4), round(96 / 7, 3)), SiteRow("south", 2, 2, 1, 0.5, 22.5)]
    kiosks = reader.kiosks(NOW)
    assert [(k.kiosk_id, k.quiet) for k in kiosks] == [("north-2", False), ("north-1", False), ("south-1", True), ("south-2", True)]
    assert kiosks[3].last_contact is None and kiosks[2].last_contact == NOW - 2 * 3600 < NOW - QUIET_AFTER_S
    assert [k.kiosk_id for k in StoreReader(url, site="south").kiosks(NOW)] == ["south-1", "south-2"]
    # north-1 runs and forwarded 30 s ago; the others stopped
    live = reader.live(NOW)
    assert (live.faces, live.fresh, live.running) == (2, True, True)
    assert [(c.kiosk_id, c.camera, c.fresh) for c in live.cameras] == [
        ("north-1", "default", True), ("north-2", "aisle", False), ("north-2", "entrance", False), ("south-1", "default", False)]
    assert reader.live(NOW + 200).faces == 0  # not forwarded for minutes: no stale count
    assert not StoreReader(url, site="south").live(NOW).fresh
    assert reader.configured_brackets() == AgeBrackets()  # the first kiosk's (north-1)
    assert StoreReader(url, kiosk="north-2").configured_brackets() == AgeBrackets.parse("30,60")
    assert StoreReader(url, kiosk="north-2").brackets(start, end).keys() >= {"under 30", "30-59", "60+"}
    local = StoreReader(combined)
    assert local.sites(start, end) == [] and local.kiosks(NOW) == []


def test_failures_are_one_line_without_the_password(fleet, postgres):  # noqa: F811
    url, _ = fleet
    password = url.split(":")[2].split("@")[0]
    wrong = url.replace(password, "not-the-password")
    with pytest.raises(StoreError) as info:
        StoreReader(wrong)
    shown = f"postgresql://dash@127.0.0.1:{postgres.port}/fleet"
    assert str(info.value).startswith(f"cannot read the central store {shown}: authentication failed")
    assert "\n" not in str(info.value) and "not-the-password" not in str(info.value)
    postgres.psql("CREATE DATABASE empty", database="postgres")
    with pytest.raises(StoreError) as info:
        StoreReader(postgres.url(database="empty"))
    assert str(info.value) == (
        f"cannot read the central store postgresql://fleet_admin@127.0.0.1:{postgres.port}/empty: "
        "it is not a fleet store (run: python -m realtime.fleet migrate)")
    with pytest.raises(StoreError, match=r"^cannot read the central store postgresql://dash@127\.0\.0\.1:1/fleet: connection refused$"):
        StoreReader(url.replace(f":{postgres.port}/", ":1/"))
    # the server restarts under a reader: one clear error meanwhile, then its pool reconnects
    reader = StoreReader(url)
    postgres.stop()
    try:
        with pytest.raises(StoreError, match=r": connection refused$"):
            reader.totals(*RANGE)
    finally:
        postgres.start_again()
    assert reader.totals(*RANGE).visits == len(ALL_VISITS)


def run_report(*args: str, store: str) -> subprocess.CompletedProcess:
    env = {**os.environ, STORE_ENV: store}  # the password stays out of the process list
    return subprocess.run([sys.executable, "-m", "realtime.kiosk", "report", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_report_on_the_central_store(fleet):
    url, _ = fleet
    frm = datetime.fromtimestamp(RANGE[0]).isoformat(timespec="seconds")
    proc = run_report("--from", frm, "--format", "json", store=url)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["visits"] == len(ALL_VISITS) and d["site"] is None
    assert [(s["site"], s["kiosks"], s["visits"]) for s in d["sites"]] == [("north", 2, 7), ("south", 2, 2)]
    proc = run_report("--from", frm, "--site", "north", "--format", "csv", store=url)
    assert proc.returncode == 0, proc.stderr
    assert "period,site,,north\n" in proc.stdout and "totals,visits,,7\n" in proc.stdout
    assert "sites,north,visits,7\n" in proc.stdout and "sites,south" not in proc.stdout
    reader = StoreReader(url)
    page = report.to_html(report.build_report(reader, *RANGE))
    assert "<h2>Sites</h2>" in page and "<td>south</td><td>2</td><td>2</td>" in page


def test_dashboard_api_on_the_central_store(fleet):
    url, _ = fleet
    app = create_app(url)
    app.testing = True
    client = app.test_client()
    d = client.get("/api/dashboard").get_json()
    today = sum(1 for v in ALL_VISITS if v.start >= today_times(1, NOW)[0])
    assert d["today"]["visits"] == today
    assert [s["site"] for s in d["fleet"]["sites"]] == ["north", "south"]
    assert [k["quiet"] for k in d["fleet"]["kiosks"]] == [False, False, True, True]
    south = client.get("/api/dashboard?site=south").get_json()
    assert [s["site"] for s in south["fleet"]["sites"]] == ["south"] and south["today"]["visits"] == 1
    rows = list(csv.DictReader(io.StringIO(client.get("/export/visits.csv?from=2000-01-01&site=south").get_data(as_text=True))))
    assert [(r["kiosk_id"], r["camera"], r["dwell_s"]) for r in rows] == [("south-1", "default", "30.0"), ("south-1", "default", "15.0")]
    bad = client.get("/api/dashboard?kiosk=nowhere")
    assert bad.status_code == 400 and "no kiosk 'nowhere'" in bad.get_json()["error"]
    with pytest.raises(UserError, match=CENTRAL_NEEDS_TOKEN.replace("(", r"\(").replace(")", r"\)")):
        DashboardServer.start(url, "0.0.0.0", 0)


def test_central_dashboard_in_headless_chromium_shows_sites_and_quiet_kiosks(fleet, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    url, _ = fleet
    server = DashboardServer.start(url, "127.0.0.1", 0)
    try:
        browser.get(server.url)
        today = sum(1 for v in ALL_VISITS if v.start >= today_times(1, NOW)[0])
        _wait_text(browser, "visits-today", str(today))
        sites = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in browser.find_elements(By.CSS_SELECTOR, "#sites-table tbody tr")]
        assert [row[:2] for row in sites] == [["north", "2"], ["south", "2"]]
        assert sum(int(row[2]) for row in sites) == today
        quiet = [tr.find_element(By.TAG_NAME, "td").text for tr in browser.find_elements(By.CSS_SELECTOR, "#kiosks-table tbody tr.quiet")]
        assert quiet == ["south-1", "south-2"]
        # the page's own ?site= narrows it
        browser.get(server.url + "?site=north")
        _wait_text(browser, "visits-today", str(today - 1))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#kiosks-table tbody tr")) == 2
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        server.stop()


def test_commands_refuse_what_they_cannot_serve(fleet):
    url, combined = fleet
    env = {**os.environ, STORE_ENV: url}
    proc = subprocess.run([sys.executable, "-m", "realtime.kiosk", "dashboard", "--host", "0.0.0.0", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (2, [f"error: {CENTRAL_NEEDS_TOKEN}"])
    proc = run_report("--data-dir", str(combined), "--site", "north", store=url)
    assert proc.returncode == 2 and "narrow a central store" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
