"""Stop signals end a run in order and promptly, whatever the run is doing (issue 9 section 3).

Real processes, real signals: SIGHUP as from a closed terminal, SIGTERM while the model
loads, SIGTERM in the middle of a frame that takes many seconds (a tiled scan of a huge
image), and a second SIGTERM while the first is being handled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from realtime.paths import ROOT
from tests.conftest import FACES, WEBCAM


def start(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "run_camera.py"), "--no-display", "--quiet", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()[1]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{path} never reached {count} lines")


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
    finally:
        cap.release()


def test_sighup_ends_like_sigterm_with_complete_outputs(tmp_path):
    proc = start(
        "--source", str(WEBCAM), "--output", str(tmp_path / "o.mp4"), "--events", str(tmp_path / "e.jsonl"),
        "--frames", str(tmp_path / "f.jsonl"), "--summary", str(tmp_path / "s.json"),
    )
    wait_for_lines(tmp_path / "f.jsonl", 30, proc)
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted"] is True and 30 <= summary["frames"] < 1337
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == summary["frames"]
    assert video_frames(tmp_path / "o.mp4") == summary["frames"]
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 1


def test_sigterm_while_starting_up_exits_130_with_a_message(tmp_path):
    proc = start("--source", str(WEBCAM), "--summary", str(tmp_path / "s.json"))
    # well inside start-up: imports and model loading take seconds, the handlers are
    # installed within the first tenth of a second
    time.sleep(0.7)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted by SIGTERM")


@pytest.fixture(scope="module")
def huge_frames(tmp_path_factory) -> Path:
    """Two 8000x8000 images: with 192-pixel tiles scanned every frame, the second frame
    takes tens of seconds on two cores, a stand-in for any frame that will not end soon."""
    folder = tmp_path_factory.mktemp("huge")
    first = next(p for p in sorted(FACES.rglob("*.jpg")))
    face = cv2.imread(str(first))
    image = cv2.resize(face, (8000, 8000), interpolation=cv2.INTER_NEAREST)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    return folder


def slow_run(folder: Path, out: Path) -> subprocess.Popen:
    return start(
        # every tile searched on every frame: the two images are identical, and motion
        # gating would otherwise skip the unchanged tiles of the second
        "--source", str(folder), "--tile-size", "192", "--scan-interval", "1", "--still-rescan", "0",
        "--frames", str(out / "f.jsonl"), "--summary", str(out / "s.json"),
    )


def test_sigterm_inside_a_long_frame_stops_within_seconds(tmp_path, huge_frames):
    proc = slow_run(huge_frames, tmp_path)
    wait_for_lines(tmp_path / "f.jsonl", 1, proc)  # the first frame is done: the slow one runs
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert took < 10, f"stopped {took:.1f} s after SIGTERM"
    summary = json.loads((tmp_path / "s.json").read_text())
    # the abandoned frame is not recorded: what is written agrees with itself
    assert summary["interrupted"] is True and summary["frames"] == 1
    assert len((tmp_path / "f.jsonl").read_text().splitlines()) == 1


def test_second_sigterm_exits_at_once(tmp_path, huge_frames):
    proc = slow_run(huge_frames, tmp_path)
    wait_for_lines(tmp_path / "f.jsonl", 1, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - sent < 2
    assert "second SIGTERM: exiting now" in stderr
    # lines already written stay whole
    for line in (tmp_path / "f.jsonl").read_text().splitlines():
        json.loads(line)
