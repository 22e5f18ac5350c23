"""Outputs never destroy a file: not the input, not each other, not a device or a link.

Issue 9 section 1 and the display part of section 2: each case here was a real defect
(the user's video replaced by an 18 KB stub with exit 0, /dev/full replaced by a
regular file, a full disk reported as success, a dead X display aborting the run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.errors import OutputError
from realtime.files import refuse_clashes, write_text_atomic
from realtime.paths import ROOT
from realtime.sinks import VideoFile, write_json_atomic
from tests.conftest import WEBCAM, run_cli

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A copy of the webcam clip that the test may try (and fail) to destroy."""
    path = tmp_path / "in.mp4"
    shutil.copy(WEBCAM, path)
    return path


def assert_refused(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


@pytest.mark.parametrize("spelling", ["same", "symlink", "hardlink", "dotted"])
def test_output_naming_the_input_is_refused_before_anything_opens(clip, spelling):
    before = digest(clip)
    target = {
        "same": clip,
        "symlink": clip.parent / "link.mp4",
        "hardlink": clip.parent / "hard.mp4",
        "dotted": clip.parent / "." / ".." / clip.parent.name / clip.name,
    }[spelling]
    if spelling == "symlink":
        target.symlink_to(clip.name)
    if spelling == "hardlink":
        os.link(clip, target)
    done = run_cli("--source", str(clip), "--no-display", "--output", str(target), timeout=60)
    assert_refused(done, "same file as the input of --source")
    assert digest(clip) == before


@pytest.mark.parametrize("option", ["--events", "--frames", "--summary"])
def test_json_outputs_naming_the_input_are_refused(clip, option):
    before = digest(clip)
    done = run_cli("--source", str(clip), "--no-display", option, str(clip), timeout=60)
    assert_refused(done, "same file as the input")
    assert digest(clip) == before


def test_two_outputs_naming_one_file_are_refused(clip, tmp_path):
    (tmp_path / "e.jsonl").write_text("kept\n")
    (tmp_path / "alias.jsonl").symlink_to("e.jsonl")
    done = run_cli("--source", str(clip), "--no-display", "--events", str(tmp_path / "e.jsonl"), "--frames", str(tmp_path / "alias.jsonl"), timeout=60)
    assert_refused(done, "same file as the output of --events")
    assert (tmp_path / "e.jsonl").read_text() == "kept\n"


def test_output_naming_the_model_is_refused(clip, tmp_path, model_path):
    model = tmp_path / "model.onnx"
    shutil.copy(model_path, model)
    before = digest(model)
    done = run_cli("--source", str(clip), "--no-display", "--model", str(model), "--summary", str(model), timeout=60)
    assert_refused(done, "same file as the input of --model")
    assert digest(model) == before


def test_clash_check_sees_files_inside_an_image_folder(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(OutputError, match="same file as the input of --source"):
        refuse_clashes({"--summary": tmp_path / "a.jpg"}, {"--source": tmp_path})
    refuse_clashes({"--summary": tmp_path / "summary.json"}, {"--source": tmp_path})


# ------------------------------------------------------------- atomic whole-file writers


def test_atomic_write_through_a_symlink_keeps_the_link(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    link = tmp_path / "summary.json"
    link.symlink_to("real.json")
    write_json_atomic(link, {"frames": 3})
    assert link.is_symlink()
    assert json.loads((tmp_path / "real.json").read_text()) == {"frames": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.json", "summary.json"]


def test_atomic_write_to_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "summary.json"
    link.symlink_to("made.json")
    write_text_atomic(link, "hello\n")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "hello\n"


def test_atomic_write_to_a_character_device_writes_in_place():
    write_json_atomic(Path("/dev/null"), {"frames": 3})
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not ROOT_USER, reason="only root could replace a device node")
def test_atomic_write_to_dev_full_fails_and_leaves_the_device():
    with pytest.raises(OutputError, match="No space left"):
        write_json_atomic(Path("/dev/full"), {"frames": 3})
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_atomic_write_to_a_fifo_without_reader_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OutputError, match="no process is reading"):
        write_text_atomic(fifo, "x")
    assert time.monotonic() - started < 2
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_atomic_write_to_a_fifo_with_a_reader_writes_to_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        for _ in range(100):  # the reader opens the FIFO on its own schedule
            try:
                write_text_atomic(fifo, "through the pipe\n")
                break
            except OutputError:
                time.sleep(0.05)
        out, _ = reader.communicate(timeout=10)
    finally:
        reader.kill()
    assert out == b"through the pipe\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_new_files_follow_the_umask_and_old_files_keep_their_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "new.json", "{}")
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        os.chmod(kept, 0o600)
        write_text_atomic(kept, "new")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600 and kept.read_text() == "new"


def test_report_out_to_a_symlink_writes_its_target(tmp_path):
    """The same writer serves the kiosk report's --out."""
    from realtime.kiosk.store import KioskStore

    KioskStore.open(tmp_path / "store").close()
    (tmp_path / "real.json").write_text("")
    (tmp_path / "report.json").symlink_to("real.json")
    done = subprocess.run(
        [sys.executable, "-m", "realtime.kiosk", "report", "--data-dir", str(tmp_path / "store"), "--out", str(tmp_path / "report.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.json").is_symlink()
    assert "visits" in json.loads((tmp_path / "real.json").read_text())


# ------------------------------------------------------------------ the video writer


def test_video_removed_while_written_is_an_error(tmp_path):
    path = tmp_path / "out.mp4"
    frame = np.full((120, 160, 3), 128, np.uint8)
    sink = VideoFile(path, 25.0, (160, 120))
    sink.write(frame)
    path.unlink()
    with pytest.raises(OutputError, match="removed while it was being written"):
        for _ in range(VideoFile.WATCH_EVERY * 2):
            sink.write(frame)
    sink.close()


def test_tiny_frames_blame_the_frame_size_not_the_path(tmp_path):
    with pytest.raises(OutputError, match="1x1 frames") as info:
        VideoFile(tmp_path / "out.mp4", 25.0, (1, 1))
    assert "cannot write video" not in str(info.value)


def test_one_pixel_video_with_output_names_the_size(tmp_path):
    tiny = tmp_path / "tiny.avi"
    writer = cv2.VideoWriter(str(tiny), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (1, 1))
    for _ in range(5):
        writer.write(np.zeros((1, 1, 3), np.uint8))
    writer.release()
    done = run_cli("--source", str(tiny), "--no-display", "--output", str(tmp_path / "out.mp4"), timeout=120)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "1x1" in line and "Traceback" not in done.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KB file system: fills after a few seconds of the webcam clip's video."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_the_run_with_exit_2_and_keeps_events_and_summary(tmp_path, small_disk):
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    done = run_cli(
        "--source", str(WEBCAM), "--no-display", "--quiet",
        "--output", str(small_disk / "out.mp4"), "--events", str(events), "--summary", str(summary),
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "disk is full" in last and "out.mp4" in last
    assert "done:" not in done.stderr
    for line in events.read_text().splitlines():
        json.loads(line)
    record = json.loads(summary.read_text())
    assert "disk is full" in record["error"] and 0 < record["frames"] < 1337


def test_dead_display_falls_back_to_no_window(tmp_path):
    """DISPLAY names an X server that is not there: Qt would abort the process."""
    summary = tmp_path / "summary.json"
    env = {**os.environ, "DISPLAY": ":97", "PYTHONUNBUFFERED": "1"}
    env.pop("WAYLAND_DISPLAY", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_camera.py"), "--source", str(WEBCAM), "--max-frames", "10", "--quiet", "--summary", str(summary)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "running without a window" in done.stderr
    assert json.loads(summary.read_text())["frames"] == 10


def test_bogus_wayland_display_falls_back_to_no_window(tmp_path):
    env = {**os.environ, "WAYLAND_DISPLAY": "no-such-wayland", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_camera.py"), "--source", str(WEBCAM), "--max-frames", "5", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "running without a window" in done.stderr
