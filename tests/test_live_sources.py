"""Live sources that fail: stalls, outages, giving up, and credentials kept out of sight.

The camera here is a real network camera as far as the decoder can tell: MJPEG over
HTTP on loopback (as IP cameras serve it), made of real frames of the shared webcam
clip, that can stall (connections open, no bytes), go down (connections refused) and
come back on the same port.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from realtime.paths import ROOT
from realtime.redact import redact
from realtime.sources import LiveSource, SourceLost
from tests.conftest import WEBCAM, read_frames, run_cli

SECRET = "s3cr3tpw"


class Camera:
    """An MJPEG camera on loopback that can be made to stall, drop and come back."""

    def __init__(self, fps: float = 25.0, frames_per_connection: int | None = None, total_frames: int | None = None) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in read_frames(WEBCAM, 25)]
        self.fps = fps
        self.frames_per_connection = frames_per_connection
        self.total_frames = total_frames  # then the camera goes down for good
        self.sent = 0
        self.stalled = threading.Event()
        self.down = threading.Event()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    def url(self, userinfo: str = "", query: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}/cam{query}"

    def start(self) -> None:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                camera._serve(self)

        self.down.clear()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: open connections are dropped and new ones refused."""
        self.down.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def _wait_while_stalled(self) -> bool:
        while self.stalled.is_set():
            if self.down.is_set():
                return False
            time.sleep(0.01)
        return not self.down.is_set()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if not self._wait_while_stalled():
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
        handler.end_headers()
        sent_here = 0
        while self._wait_while_stalled():
            if self.frames_per_connection is not None and sent_here >= self.frames_per_connection:
                return  # the stream ends: the client sees end of file
            with self._lock:
                if self.total_frames is not None and self.sent >= self.total_frames:
                    threading.Thread(target=self.stop, daemon=True).start()
                    return
                jpeg = self.jpegs[self.sent % len(self.jpegs)]
                self.sent += 1
            try:
                handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n" % (len(jpeg), jpeg))
                handler.wfile.flush()
            except OSError:
                return
            sent_here += 1
            time.sleep(1 / self.fps)


@pytest.fixture
def camera():
    cam = Camera()
    yield cam
    cam.stop()


@pytest.fixture
def source_log(caplog):
    caplog.set_level(logging.WARNING, logger="realtime.sources")
    return caplog


def _lines(caplog, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "realtime.sources" and word in r.getMessage()]


class Sampler:
    """Reads a source's stats from another thread, as a progress display does."""

    def __init__(self, source: LiveSource) -> None:
        self.samples: list[tuple[float | None, int, str | None]] = []
        self._stop = threading.Event()
        stats = source.stats

        def poll() -> None:
            while not self._stop.wait(0.05):
                self.samples.append((stats.open_gap_start, stats.retries, stats.status))

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------ stalls and outages


@pytest.mark.timeout(60)
def test_a_stall_is_recorded_from_the_last_frame_to_the_first_frame_after(camera, source_log):
    stall_s = 1.5
    source = LiveSource(camera.url(), "stream", timeout_ms=500, backoff=(0.1, 0.2), give_up_after_s=15)
    sampler = Sampler(source)
    times: list[float] = []
    try:
        for frame in source:
            times.append(frame.time)
            if len(times) == 10:
                camera.stall()  # the socket stays open, no byte comes
                threading.Timer(stall_s, camera.resume).start()
            if source.stats.reconnects and sum(t > source.stats.gaps[0][1] for t in times) >= 5:
                break
    finally:
        source.close()
        sampler.stop()
    stats = source.stats
    assert stats.reconnects == 1 and len(stats.gaps) == 1 and stats.open_gap_start is None
    start, end = stats.gaps[0]
    before = max(t for t in times if t <= start)
    after = min(t for t in times if t > start)
    # from the last frame before (not from the read timeout 0.5 s later) to the first
    # frame after (not to the capture's reopening)
    assert before == pytest.approx(start, abs=1e-6)
    assert end <= after < end + 0.25
    assert stall_s - 0.1 < end - start < stall_s + 1.5
    # while it was down, the state a progress display needs was there, and said so
    down = [s for s in sampler.samples if s[0] is not None]
    assert down and all(s[0] == pytest.approx(start) for s in down)
    assert any(s[1] >= 1 and re.fullmatch(r"stream down for [\d.]+ s, retry \d+", s[2] or "") for s in down)
    assert sampler.samples[-1][0] is None and sampler.samples[-1][2] is None
    assert _lines(source_log, "retry 1") and _lines(source_log, "back after")


@pytest.mark.timeout(60)
def test_a_source_down_past_its_limit_ends_with_source_lost(camera, source_log):
    give_up = 2.0
    source = LiveSource(camera.url(f"user:{SECRET}@"), "stream", timeout_ms=500, backoff=(0.02, 0.02), give_up_after_s=give_up)
    times: list[float] = []
    with pytest.raises(SourceLost) as lost:
        for frame in source:
            times.append(frame.time)
            if len(times) == 5:
                camera.stop()  # refused from now on
    ended = source.stats.now()
    source.close()
    assert lost.value.exit_code == 3
    message = str(lost.value)
    assert re.fullmatch(rf"stream http://\*\*\*@127\.0\.0\.1:{camera.port}/cam lost: no frame for 2\.\d s \(\d+ reconnection attempts\), giving up", message)
    # the outage is one closed gap from the last frame to the moment it gave up
    stats = source.stats
    assert stats.open_gap_start is None and len(stats.gaps) == 1
    start, end = stats.gaps[0]
    assert start == pytest.approx(times[-1], abs=1e-6)
    assert give_up <= end - start < give_up + 0.6 and end <= ended
    # many attempts, few lines: the retry lines come at growing intervals (0, 1, 3 s)
    retries = _lines(source_log, "retry")
    assert stats.retries >= 20 and 2 <= len(retries) <= 3, retries
    numbers = [int(re.search(r"retry (\d+)", line).group(1)) for line in retries]  # type: ignore[union-attr]
    assert numbers[0] == 1 and numbers == sorted(numbers)
    assert not any(SECRET in line for line in retries)


@pytest.mark.timeout(60)
def test_a_gap_still_open_at_close_is_recorded_until_the_close(camera):
    source = LiveSource(camera.url(), "stream", timeout_ms=500, backoff=(0.1, 0.2))
    try:
        frames = iter(source)
        next(frames)
        camera.stop()
        deadline = time.monotonic() + 10
        while source.stats.open_gap_start is None and time.monotonic() < deadline:
            time.sleep(0.02)
        start = source.stats.open_gap_start
        assert start is not None and source.stats.gaps == []
        time.sleep(0.3)
        # what a summary written before the close records: the gap, ending now
        (so_far,) = source.stats.gaps_so_far()
        assert so_far[0] == start and so_far[1] >= start + 0.3
        closing = source.stats.now()
    finally:
        source.close()
    assert source.stats.open_gap_start is None
    ((recorded_start, recorded_end),) = source.stats.gaps
    assert recorded_start == start and closing <= recorded_end < closing + 5


# ------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    "spec, shown",
    [
        ("rtsp://admin:pw@10.0.0.5:554/Streaming/Channels/101", "rtsp://***@10.0.0.5:554/Streaming/Channels/101"),
        ("rtsp://admin@cam/live", "rtsp://***@cam/live"),
        ("rtsp://u:p@ss:w?rd@cam/live", "rtsp://***@cam/live"),  # unencoded @ and ? in the password
        ("http://cam/video.cgi?user=admin&password=pw&channel=1", "http://cam/video.cgi?user=***&password=***&channel=1"),
        ("http://cam?token=abc", "http://cam?token=***"),
        ("rtsp://cam:554/user=admin&password=pw&channel=1&stream=0.sdp", "rtsp://cam:554/user=***&password=***&channel=1&stream=0.sdp"),
        ("https://bucket/clip.mp4?X-Amz-Credential=a&X-Amz-Signature=b&x=1", "https://bucket/clip.mp4?X-Amz-Credential=***&X-Amz-Signature=***&x=1"),
        ("rtsp://cam/live", "rtsp://cam/live"),
        ("0", "0"),
        ("/videos/a@b:c.mp4", "/videos/a@b:c.mp4"),  # a file name is not a URL
    ],
)
def test_redact_hides_user_info_and_secret_parameters(spec, shown):
    assert redact(spec) == shown


def test_a_live_source_never_names_its_credentials(camera, source_log):
    url = camera.url(f"admin:{SECRET}@", f"?password={SECRET}")
    source = LiveSource(url, "stream", timeout_ms=500, backoff=(0.05, 0.05))
    try:
        next(iter(source))
        camera.stop()
        deadline = time.monotonic() + 10
        while not _lines(source_log, "retry") and time.monotonic() < deadline:
            time.sleep(0.02)
        names = [source.info.name, source._thread.name, *_lines(source_log, "")]
    finally:
        source.close()
    assert source.info.name == f"http://***@127.0.0.1:{camera.port}/cam?password=***"
    assert len(names) >= 3 and not any(SECRET in name for name in names), names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "spec, line",
    [
        ("http://admin:{secret}@127.0.0.1:{port}/cam", "error: stream http://***@127.0.0.1:{port}/cam could not be opened or gave no frame"),
        ("http://127.0.0.1:{port}/cam?token={secret}", "error: stream http://127.0.0.1:{port}/cam?token=*** could not be opened or gave no frame"),
        ("rtp://admin:{secret}@127.0.0.1:{port}/cam", "error: source not found: rtp://***@127.0.0.1:{port}/cam (give a camera index, a video file, an image folder or a stream URL)"),
    ],
    ids=["user-info", "query-token", "unknown-scheme"],
)
def test_a_failing_url_with_credentials_is_one_line_without_them(spec, line, tmp_path):
    port = _free_port()
    proc = run_cli("--source", spec.format(secret=SECRET, port=port), "--no-display", "--summary", str(tmp_path / "s.json"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [line.format(port=port)]
    assert SECRET not in proc.stdout + proc.stderr


def test_give_up_after_refuses_what_is_not_a_duration():
    for bad in ("-1", "nan", "soon"):
        proc = run_cli("--source", "0", "--give-up-after", bad, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [f"run_camera.py: error: argument --give-up-after: expected seconds, 0 or never, got {bad!r}"]


def _no_secret_anywhere(*paths: Path) -> None:
    for path in paths:
        assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.timeout(120)
def test_a_run_on_a_url_with_credentials_writes_them_nowhere(model_path, tmp_path):
    # each connection serves 8 frames then ends: 20 frames need reconnections, so the
    # retry lines are written too
    cam = Camera(fps=50, frames_per_connection=8)
    out = {name: tmp_path / name for name in ("summary.json", "events.jsonl", "frames.jsonl")}
    try:
        proc = run_cli(
            "--source", cam.url(f"admin:{SECRET}@", f"?password={SECRET}"), "--model", str(model_path), "--no-display",
            "--max-frames", "20", "--summary", str(out["summary.json"]), "--events", str(out["events.jsonl"]),
            "--frames", str(out["frames.jsonl"]), timeout=120,
        )  # fmt: skip
    finally:
        cam.stop()
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert "retry 1" in proc.stderr and f"http://***@127.0.0.1:{cam.port}/cam?password=***" in proc.stderr
    _no_secret_anywhere(*out.values())
    summary = json.loads(out["summary.json"].read_text())
    assert summary["source"] == f"http://***@127.0.0.1:{cam.port}/cam?password=***"
    assert summary["frames"] == 20 and summary["reconnects"] >= 2 and len(summary["gaps"]) >= 2


@pytest.mark.timeout(120)
def test_a_kiosk_on_a_url_with_credentials_stores_them_nowhere(model_path, tmp_path):
    cam = Camera()
    data_dir = tmp_path / "store"
    try:
        proc = run_cli("--source", cam.url(f"admin:{SECRET}@"), "--model", str(model_path), "--kiosk", "--data-dir", str(data_dir), "--max-frames", "10", timeout=120)
    finally:
        cam.stop()
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files
    _no_secret_anywhere(*files)
    with sqlite3.connect(next(p for p in files if p.suffix in (".db", ".sqlite", ".sqlite3"))) as db:
        assert db.execute("SELECT source FROM runs").fetchall() == [(f"http://***@127.0.0.1:{cam.port}/cam",)]


@pytest.mark.timeout(120)
def test_a_run_whose_stream_stays_down_stops_with_exit_3_and_complete_outputs(model_path, tmp_path):
    cam = Camera(total_frames=30)  # then down for good
    summary, events = tmp_path / "summary.json", tmp_path / "events.jsonl"
    try:
        started = time.monotonic()
        proc = run_cli(
            "--source", cam.url(f"admin:{SECRET}@"), "--model", str(model_path), "--no-display", "--give-up-after", "1",
            "--summary", str(summary), "--events", str(events), timeout=120,
        )  # fmt: skip
    finally:
        cam.stop()
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: stream http://\*\*\*@127\.0\.0\.1:{cam.port}/cam lost: no frame for [\d.]+ s \(\d+ reconnection attempts?\), giving up", last), proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 100
    report = json.loads(summary.read_text())
    assert report["frames"] >= 1 and len(report["gaps"]) == 1 and report["gaps"][0][1] - report["gaps"][0][0] >= 1
    for line in events.read_text().splitlines():
        json.loads(line)


@pytest.mark.timeout(120)
def test_a_run_stopped_while_its_stream_is_down_records_the_open_gap(model_path, tmp_path):
    cam = Camera(total_frames=40)  # then down for good
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    args = ["--source", cam.url(), "--model", str(model_path), "--no-display", "--give-up-after", "never", "--summary", str(summary)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_camera.py"), *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        # running (the model loaded) and the stream down
        while not (any(line.startswith("source:") for line in seen) and any("retry" in line for line in seen)):
            line = proc.stderr.readline()
            assert line, seen
            seen.append(line)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        cam.stop()
    assert proc.returncode == 130, "".join(seen) + rest
    (start, end), = json.loads(summary.read_text())["gaps"]
    assert end - start >= 1.0
