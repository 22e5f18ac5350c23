"""Issue 9, section 7: the dashboard and reports under hostile input.

Dates out of range are refused the same way everywhere (HTTP 400 with a JSON error,
exit 2 with one line on the command line); the real server (waitress) sends security
headers, checks the Host header against DNS rebinding, and requires an access token
when one is set; `report --out` never replaces what its path is (a device node, a
symlink, the store itself).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realtime.kiosk.dashboard import TOKEN_COOKIE, TOKEN_ENV, DashboardServer, create_app
from realtime.kiosk.store import KioskStore, StoreOptions, store_file
from realtime.kiosk.visits import Visit
from realtime.paths import ROOT

TOKEN = "kiosk-Token_1.2~x"
DATE_ENDPOINTS = ["/api/report", "/export/report.csv", "/export/visits.csv"]
BAD_DATES = [
    "to=9999-12-31",  # the day after it overflows datetime: was a 500
    "from=0000-01-01",
    "from=garbage",
    "to=99999999999999999999",
    "from=NaN",
    "from=1e400",
    "to=0001-01-01T00%3A00%2B01%3A00",  # a zone that moves it before year 1
    "from=1969-12-31T23%3A00-05%3A00",
    "from=2024-01-01&to=" + "9" * 5000,
]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("kiosk")
    with KioskStore.open(data_dir, StoreOptions(retention_days=None)) as store:
        t = time.time() - 600
        store.add_visits([Visit(1, t, t + 6, 6.0, 2.0, 1, 30.0, 2.0, "25-34", "female", 0.9)])
    return data_dir


def request(server: DashboardServer | int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request; the Host header is sent as given (http.client adds none then)."""
    port = server if isinstance(server, int) else server.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize("query", BAD_DATES)
def test_bad_dates_are_400_with_json_on_every_endpoint(store_dir, query):
    client = create_app(store_dir).test_client()
    for endpoint in DATE_ENDPOINTS:
        response = client.get(f"{endpoint}?{query}")
        assert response.status_code == 400, (endpoint, query, response.get_data(as_text=True)[:200])
        error = response.get_json()["error"]
        assert ("out of range" in error or "not an ISO date" in error) and len(error) < 200


def run_kiosk(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "realtime.kiosk", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("args", [["--to", "9999-12-31"], ["--from", "0000-01-01"], ["--from", "2024-01-01", "--to", "5000-01-01T00:00"]])
def test_report_cli_refuses_dates_out_of_range_with_one_line(store_dir, args):
    proc = run_kiosk("report", "--data-dir", str(store_dir), *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: date out of range") and len(proc.stderr.strip().splitlines()) == 1


def test_the_whole_supported_range_reports(store_dir):
    response = create_app(store_dir).test_client().get("/api/report?from=1970-01-01&to=2999-12-31")
    assert response.status_code == 200 and response.get_json()["visits"] == 1


# ------------------------------------------------------------------ the server


@pytest.fixture(scope="module")
def server(store_dir):
    server = DashboardServer.start(store_dir, "127.0.0.1", 0, allowed_hosts=["kiosk.example.lan"])
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/", "/api/live", "/api/dashboard", "/static/dashboard.js", "/static/dashboard.css", "/no-such-page", "/api/report?to=garbage"])
def test_every_response_has_security_headers_and_no_server_version(server, path):
    status, headers, _ = request(server, path)
    assert status in (200, 400, 404)
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "server" not in headers  # the development server sent "Werkzeug/3.x Python/3.x"


def test_served_by_a_production_server(server):
    assert type(server.server).__module__.startswith("waitress.")


def test_page_needs_nothing_the_policy_forbids(server):
    """No inline script, style or event handler: the CSP allows only the page's own files."""
    status, _, body = request(server, "/")
    page = body.decode()
    assert status == 200
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+\s*=", page)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.DOTALL)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:{port}", True),
    ("localhost:{port}", True),
    ("[::1]:{port}", True),
    ("LOCALHOST", True),
    ("kiosk.example.lan:{port}", True),  # --dashboard-allow-host
    ("attacker.example:{port}", False),  # a rebound name: the page on attacker.example reads our data
    ("10.0.0.5:{port}", False),  # bound to loopback: other addresses are not us
    ("", False),
    ("a:b:c", False),
])
def test_host_header_is_checked_against_dns_rebinding(server, host, allowed):
    status, _, body = request(server, "/api/live", {"Host": host.format(port=server.port)})
    if allowed:
        assert status == 200, body
    else:
        assert status == 421 and "host name" in json.loads(body)["error"]


def test_any_ip_is_accepted_but_no_foreign_name_when_bound_to_every_interface(store_dir):
    server = DashboardServer.start(store_dir, "0.0.0.0", 0)
    try:
        assert server.exposed and "reachable from other machines" in server.exposure_warning()
        assert request(server, "/api/live", {"Host": f"192.0.2.7:{server.port}"})[0] == 200
        assert request(server, "/api/live", {"Host": f"localhost:{server.port}"})[0] == 200
        assert request(server, "/api/live", {"Host": f"rebound.attacker.example:{server.port}"})[0] == 421
    finally:
        server.stop()


def test_token_is_required_on_every_request(store_dir):
    server = DashboardServer.start(store_dir, "127.0.0.1", 0, token=TOKEN)
    try:
        for path in ("/", "/api/live", "/static/dashboard.js", "/export/visits.csv", "/no-such-page"):
            status, headers, body = request(server, path)
            assert status == 401 and "access token" in json.loads(body)["error"], path
            assert headers["www-authenticate"].startswith("Bearer")
        assert request(server, "/api/live", {"Authorization": "Bearer wrong-token"})[0] == 401
        assert request(server, "/api/live", {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
        assert request(server, "/api/live", {"Cookie": f"{TOKEN_COOKIE}=wrong"})[0] == 401
        assert request(server, "/api/live", {"Authorization": f"Bearer {TOKEN}"})[0] == 200

        # the browser's way in: ?token= once, then an HttpOnly SameSite=Strict cookie
        status, headers, _ = request(server, f"/?range=week&token={TOKEN}")
        assert status == 303 and headers["location"] == "/?range=week"  # the token leaves the address bar
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert request(server, "/", {"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})[0] == 200
        assert request(server, "/api/dashboard", {"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})[0] == 200
        assert request(server, f"/api/live?token={TOKEN}")[0] == 200
        assert request(server, "/api/live?token=nope")[0] == 401
    finally:
        server.stop()


def test_stop_ends_the_server_with_a_connection_still_open(store_dir):
    server = DashboardServer.start(store_dir, "127.0.0.1", 0)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/api/live")
    assert conn.getresponse().read()  # keep-alive: the connection stays open
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 5 and not server.thread.is_alive()
    with socket.create_server(("127.0.0.1", server.port)):  # the port is free again
        pass
    conn.close()


def test_dashboard_command_takes_the_token_from_the_environment_and_warns_beyond_loopback(store_dir):
    env = {**os.environ, TOKEN_ENV: TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime.kiosk", "dashboard", "--data-dir", str(store_dir), "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        while not (lines and lines[-1].startswith("dashboard:")):
            line = proc.stderr.readline()
            assert line, f"the dashboard ended: {lines}"
            lines.append(line)
        assert lines[0].startswith("warning: the dashboard on 0.0.0.0:") and "reachable from other machines" in lines[0]
        port = int(re.search(r":(\d+)/", lines[-1]).group(1))
        assert request(port, "/api/live")[0] == 401
        assert request(port, "/api/live", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


@pytest.mark.parametrize("args", [["--token", "has space"], ["--token", "a+b"]])
def test_a_token_that_cannot_travel_is_refused(store_dir, args):
    proc = run_kiosk("dashboard", "--data-dir", str(store_dir), "--port", "0", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the dashboard token") and len(proc.stderr.splitlines()) == 1


# ------------------------------------------------------------------ report --out


def test_report_out_to_a_device_never_replaces_it(store_dir, tmp_path):
    """As root, `report --out /dev/full` replaced the device node with a regular file.

    The same device (1, 7) under tmp_path: a regression must not break the machine's /dev/full.
    """
    if os.geteuid() != 0:
        pytest.skip("only root can replace a device node")
    full = tmp_path / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here: {exc.strerror}")
    proc = run_kiosk("report", "--data-dir", str(store_dir), "--out", str(full))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: cannot write {full}")
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert list(tmp_path.iterdir()) == [full]  # no temporary file left behind


def test_report_out_writes_through_a_symlink_and_keeps_the_mode(store_dir, tmp_path):
    target = tmp_path / "target.json"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    proc = run_kiosk("report", "--data-dir", str(store_dir), "--out", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["visits"] == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_report_out_never_overwrites_the_store(store_dir):
    before = store_file(store_dir).read_bytes()
    proc = run_kiosk("report", "--data-dir", str(store_dir), "--out", str(store_file(store_dir)))
    assert proc.returncode == 2 and "same file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert store_file(store_dir).read_bytes() == before
