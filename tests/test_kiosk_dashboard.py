"""The kiosk dashboard: its JSON API and exports, and the page in a real headless Chromium.

The browser test needs Debian's chromium and chromium-driver (.ci/install-browser.sh)
and the selenium package. Without them it is skipped on a workstation, and fails in CI
(CI set), where a skipped browser test would hide a broken dashboard.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import time
import urllib.request

import pytest

from realtime.kiosk.dashboard import DashboardServer, create_app, local_midnight, range_bounds
from realtime.kiosk.store import KioskStore, StoreOptions
from realtime.kiosk.visits import Visit


def visit(track_id: int, start: float, dwell: float = 6.0, attention: float = 2.0, glances: int = 1, bracket: str = "25-34", gender: str = "female") -> Visit:
    return Visit(track_id, start, start + dwell, dwell, attention, glances, 30.0, 2.0, bracket, gender, 0.9)


def today_times(n: int, now: float) -> list[float]:
    """n visit starts earlier today (or in the last minutes just after midnight)."""
    start = max(local_midnight(now), now - 3 * 3600)
    return [start + (now - 60 - start) * i / max(n, 1) for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with KioskStore.open(tmp_path, StoreOptions(retention_days=None)) as s:
        yield s


@pytest.fixture
def client(store):
    app = create_app(store.data_dir)
    app.testing = True
    return app.test_client()


def test_api_dashboard_has_the_page_figures(store, client):
    now = time.time()
    starts = today_times(3, now)
    store.add_visits([
        visit(1, starts[0], attention=0, glances=0),
        visit(2, starts[1], dwell=30, attention=5, bracket="18-24", gender="male"),
        visit(3, starts[2]),
    ])
    store.tick(faces=2, people=2, force=True)
    d = client.get("/api/dashboard").get_json()
    assert d["live"]["faces"] == 2 and d["live"]["fresh"]
    assert d["today"]["visits"] == 3 and d["today"]["viewers"] == 2
    assert d["today"]["attention_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert d["brackets"]["18-24"]["male"] == 1 and d["brackets"]["25-34"]["female"] == 2
    assert sum(b["visits"] for b in d["timeline"]) == 3
    assert sum(d["dwell"]["visits"]) == 3 and sum(d["attention"]["viewers"]) == 2
    assert len(d["dwell"]["labels"]) == len(d["dwell"]["visits"])
    hour = client.get("/api/dashboard?range=hour").get_json()
    assert len(hour["timeline"]) == 60 and hour["range"]["bucket_s"] == 60
    assert client.get("/api/dashboard?range=year").status_code == 400


def test_csv_exports_and_report_api(store, client):
    now = time.time()
    store.add_visits([visit(i, t) for i, t in enumerate(today_times(4, now), start=1)])
    frm = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 4 * 3600))
    response = client.get(f"/export/visits.csv?from={frm}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 4 and rows[0]["gender"] == "female" and float(rows[0]["dwell_s"]) == 6.0
    assert "attachment" in response.headers["Content-Disposition"]
    report = client.get(f"/api/report?from={frm}").get_json()
    assert report["visits"] == 4 and report["brackets"]["25-34"]["female"] == 4
    text = client.get(f"/export/report.csv?from={frm}").get_data(as_text=True)
    assert "totals,visits,,4" in text
    bad = client.get("/api/report?from=yesterday")
    assert bad.status_code == 400 and "not an ISO date" in bad.get_json()["error"]


def test_endpoints_take_a_camera(store, client):
    now = time.time()
    times = today_times(3, now)
    store.add_visits([visit(1, times[0]), visit(2, times[1])], camera="entrance")
    store.add_visits([visit(1, times[2], bracket="65+", gender="male")], camera="aisle")
    store.tick(faces=2, people=2, force=True, camera="entrance")
    store.tick(faces=1, people=1, force=True, camera="aisle")
    whole = client.get("/api/dashboard").get_json()
    assert whole["today"]["visits"] == 3 and whole["live"]["faces"] == 3
    assert {c["camera"]: c["faces"] for c in whole["live"]["cameras"]} == {"aisle": 1, "entrance": 2}
    aisle = client.get("/api/dashboard?camera=aisle").get_json()
    assert aisle["today"]["visits"] == 1 and aisle["live"]["faces"] == 1 and aisle["brackets"]["65+"]["male"] == 1
    assert client.get("/api/live?camera=entrance").get_json()["people"] == 2
    frm = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now - 4 * 3600))
    rows = list(csv.DictReader(io.StringIO(client.get(f"/export/visits.csv?from={frm}").get_data(as_text=True))))
    assert sorted((r["camera"], r["track_id"]) for r in rows) == [("aisle", "1"), ("entrance", "1"), ("entrance", "2")]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/export/visits.csv?from={frm}&camera=entrance").get_data(as_text=True))))
    assert [r["camera"] for r in rows] == ["entrance", "entrance"]
    assert client.get(f"/api/report?from={frm}&camera=aisle").get_json()["visits"] == 1
    assert "totals,visits,,2" in client.get(f"/export/report.csv?from={frm}&camera=entrance").get_data(as_text=True)
    bad = client.get("/api/dashboard?camera=lobby")
    assert bad.status_code == 400 and "no camera 'lobby'" in bad.get_json()["error"]


def test_page_and_assets_are_local(client):
    page = client.get("/").get_data(as_text=True)
    assert "chart.umd.min.js" in page and "dashboard.js" in page
    assert "cdn" not in page.lower() and "https://" not in page
    js = client.get("/static/chart.umd.min.js")
    assert js.status_code == 200 and b"Chart.js v4" in js.get_data()[:200]
    assert client.get("/").headers["Cache-Control"] == "no-store"


def test_range_bounds_today_starts_at_local_midnight():
    now = time.time()
    start, end, bucket = range_bounds("today", now)
    assert start == local_midnight(now) and end == now and bucket == 900
    assert range_bounds("week", now)[0] < start - 6 * 86400 + 7200


def test_server_binds_loopback_and_reports_a_busy_port(store):
    from realtime.errors import UserError

    server = DashboardServer.start(store.data_dir, "127.0.0.1", 0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "api/live", timeout=10) as r:
            assert r.status == 200
        with pytest.raises(UserError, match=f"cannot serve the dashboard on 127.0.0.1:{server.port}"):
            DashboardServer.start(store.data_dir, "127.0.0.1", server.port)
    finally:
        server.stop()


# ------------------------------------------------------------------ the real browser

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"headless browser test cannot run in CI: {reason} (run .ci/install-browser.sh first)")
    pytest.skip(f"headless browser not available: {reason} (install with .ci/install-browser.sh)")


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("the selenium package is not installed (pip install 'selenium>=4.20')")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver_path = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if binary is None or driver_path is None:
        _unavailable(f"chromium {'found' if binary else 'missing'}, chromedriver {'found' if driver_path else 'missing'}")
    profile = tempfile.mkdtemp(prefix="kiosk-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        # an explicit driver path: selenium must never try to download one
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        _unavailable(f"chromium did not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_text(driver, element_id: str, expected: str, timeout: float = 20.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        return d.find_element(By.ID, element_id).text == expected

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.2).until(shown)
    except Exception:
        actual = driver.find_element(By.ID, element_id).text
        raise AssertionError(f"#{element_id} shows {actual!r}, expected {expected!r}") from None


def test_page_in_headless_chromium_shows_the_store_and_follows_it(store, browser):
    from selenium.webdriver.common.by import By

    now = time.time()
    starts = today_times(5, now)
    store.add_visits([visit(i, t, glances=int(i % 2), attention=float(2 * (i % 2))) for i, t in enumerate(starts, start=1)])
    store.tick(faces=3, people=3, force=True)
    server = DashboardServer.start(store.data_dir, "127.0.0.1", 0)
    try:
        browser.get(server.url)
        _wait_text(browser, "visits-today", "5")
        _wait_text(browser, "visitors-now", "3")
        assert browser.find_element(By.ID, "viewers-today").text == "3"
        assert browser.find_element(By.ID, "attention-rate").text == "60 %"
        assert browser.find_element(By.ID, "status").text == "live"
        charted = browser.execute_script(
            "const c = window.kioskDashboard.charts;"
            "const sum = (ch) => ch.data.datasets.reduce((a, d) => a + d.data.reduce((x, y) => x + (y || 0), 0), 0);"
            "return [sum(c.brackets), c.timeline.data.datasets[0].data.reduce((a, b) => a + b, 0), sum(c.dwell), sum(c.attention)];"
        )
        assert charted == [5, 5, 5, 3]  # the charts were drawn from the store's figures

        # the store changes under the page: it follows within a refresh or two
        store.add_visits([visit(i, now - 30, bracket="65+", gender="male") for i in (10, 11)])
        store.tick(faces=1, people=1, force=True)
        _wait_text(browser, "visits-today", "7")
        _wait_text(browser, "visitors-now", "1")
        assert browser.execute_script("return window.kioskDashboard.charts.brackets.data.datasets[1].data")[-1] == 2

        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        server.stop()
