"""Outputs: playable video, flushed JSON lines, atomic summary."""

import json

import cv2
import numpy as np
import pytest

from realtime.errors import OutputError
from realtime.sinks import JsonLinesFile, VideoFile, write_json_atomic
from tests.conftest import WEBCAM, read_frames


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_video_file_writes_every_frame(tmp_path, suffix):
    frames = read_frames(WEBCAM, 20)
    path = tmp_path / f"out{suffix}"
    with VideoFile(path, 25.0, (400, 300)) as sink:
        for frame in frames:
            sink.write(frame)
    cap = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        count += 1
        assert image.shape == (300, 400, 3)
    assert count == 20
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)


def test_video_file_resizes_odd_frames(tmp_path):
    with VideoFile(tmp_path / "o.mp4", 10, (200, 100)) as sink:
        sink.write(np.zeros((50, 60, 3), np.uint8))
    assert cv2.VideoCapture(str(tmp_path / "o.mp4")).read()[1].shape == (100, 200, 3)


def test_json_lines_are_flushed_per_record(tmp_path):
    path = tmp_path / "e.jsonl"
    sink = JsonLinesFile(path)
    sink.write({"a": np.float32(1.5), "b": float("nan"), "c": [np.int64(3)]})
    # readable before close: a crash after this line keeps it
    assert json.loads(path.read_text().splitlines()[0]) == {"a": 1.5, "b": None, "c": [3]}
    sink.close()


def test_summary_is_atomic(tmp_path):
    path = tmp_path / "s.json"
    write_json_atomic(path, {"frames": 3})
    assert json.loads(path.read_text()) == {"frames": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_unwritable_paths(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        JsonLinesFile(tmp_path / "missing" / "e.jsonl")
    with pytest.raises(OutputError, match="is a folder"):
        VideoFile(tmp_path, 25, (10, 10))
    with pytest.raises(OutputError, match="unsupported video format"):
        VideoFile(tmp_path / "x.gifv", 25, (10, 10))
