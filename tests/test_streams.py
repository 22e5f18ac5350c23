"""Several streams in one process: the same people per stream as separate runs, one
stream failing alone, newest-frame-wins drops spread evenly, and the cameras file.

The streams are the shared real clips and real network cameras (MJPEG over HTTP on
loopback, from tests/test_live_sources.py) made of the shared webcam clip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from realtime.analyzer import AnalyzerOptions
from realtime.cameras import (
    Camera,
    CameraOverrides,
    from_sources,
    load_cameras,
    per_camera_paths,
    unique_names,
)
from realtime.detection import DetectorOptions
from realtime.errors import UserError
from realtime.paths import ROOT
from realtime.runner import RunOptions, run
from realtime.sinks import tile_views
from realtime.sources import open_source
from realtime.streams import SharedEngines, Stream, StreamsOptions, run_streams
from tests.conftest import VIDEOS, WEBCAM, read_frames, run_cli
from tests.test_live_sources import Camera as NetworkCamera

CLIPS = [VIDEOS / "two_people_walking.gif", VIDEOS / "three_people_walking.gif", VIDEOS / "classroom_four_seated.gif"]


@pytest.fixture(scope="module")
def engines(model):
    from realtime.detection import create_engine

    options = DetectorOptions()
    shared = SharedEngines([create_engine(options), create_engine(options)], options, model)
    yield shared
    shared.close()


def _stream(engines: SharedEngines, spec: str, name: str, max_frames: int | None = None) -> Stream:
    source = open_source(spec)
    analyzer = engines.analyzer(AnalyzerOptions(fps=source.info.fps))
    return Stream(name, source, analyzer, [], max_frames=max_frames)


def _people(people) -> list[tuple]:
    return [(p.track_id, p.first_frame, p.last_frame, p.frames_inferred, p.gender, round(p.age or -1, 1)) for p in people]


def test_several_files_at_once_give_each_stream_the_people_of_its_own_run(engines, model):
    streams = [_stream(engines, str(clip), clip.stem) for clip in CLIPS]
    together = run_streams(streams, engines, StreamsOptions(progress=False))
    assert [name for name, _ in together.streams] == [clip.stem for clip in CLIPS]
    # the model ran once per tick for every stream's faces, not once per stream
    assert together.model_batches < sum(s.faces_inferred for _, s in together.streams)
    for clip, (_, summary) in zip(CLIPS, together.streams):
        with open_source(str(clip)) as source:
            single = run(source, engines.analyzer(AnalyzerOptions(fps=source.info.fps)), RunOptions(progress=False))
        assert summary.frames == single.frames == open_source(str(clip)).info.frame_count
        assert summary.error is None and summary.tracks == single.tracks > 0
        assert _people(summary.people) == _people(single.people)


@pytest.mark.timeout(120)
def test_a_stream_lost_for_good_ends_alone_while_the_others_go_on(engines, model):
    cam = NetworkCamera(total_frames=30)  # then down for good
    try:
        lost = Stream("door", open_source(cam.url(), give_up_after_s=1.0), engines.analyzer(AnalyzerOptions(fps=25.0)), [])
        steady = _stream(engines, str(WEBCAM), "hall", max_frames=150)
        summary = run_streams([lost, steady], engines, StreamsOptions(progress=False))
    finally:
        cam.stop()
    by_name = dict(summary.streams)
    assert by_name["door"].error is not None and "lost" in by_name["door"].error
    assert 1 <= by_name["door"].frames <= 30
    # the file went on to its limit after the stream was lost (30 frames at 25 fps + 1 s)
    assert by_name["hall"].error is None and by_name["hall"].frames == 150 and by_name["hall"].tracks == 1
    assert summary.failures == [("door", by_name["door"].error)]


@pytest.mark.timeout(120)
def test_live_streams_keep_the_newest_frame_and_drop_evenly_when_the_machine_is_behind(engines, model):
    # two cameras at 200 fps: far more than the analysis keeps up with on this machine
    cams = [NetworkCamera(fps=200.0), NetworkCamera(fps=200.0)]
    try:
        streams = [
            Stream(f"cam{i}", open_source(c.url(), give_up_after_s=10.0), engines.analyzer(AnalyzerOptions(fps=200.0, detect_every=1)), [], max_frames=40)
            for i, c in enumerate(cams)
        ]
        summary = run_streams(streams, engines, StreamsOptions(progress=False))
    finally:
        for c in cams:
            c.stop()
    frames = [s.frames for _, s in summary.streams]
    dropped = [s.live.dropped_frames for _, s in summary.streams]
    assert frames == [40, 40]
    assert all(d > 0 for d in dropped), dropped
    # each tick takes one frame from each stream: neither is starved for the other
    assert max(dropped) <= 1.5 * min(dropped) + 5, dropped


def test_the_summary_lists_every_stream_and_outputs_follow_the_name_template(model_path, tmp_path):
    a, b = CLIPS[0], CLIPS[1]
    summary = tmp_path / "run.json"
    proc = run_cli(
        "--source", str(a), "--source", str(b), "--model", str(model_path), "--no-display", "--quiet",
        "--events", str(tmp_path / "events-{name}.jsonl"), "--summary", str(summary),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(summary.read_text())
    assert [s["name"] for s in report["streams"]] == [a.stem, b.stem]
    assert report["frames"] == sum(s["frames"] for s in report["streams"]) and report["failed_streams"] == 0
    for stream in report["streams"]:
        events = [json.loads(line) for line in (tmp_path / f"events-{stream['name']}.jsonl").read_text().splitlines()]
        assert len(events) == stream["tracks"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--events", "events.jsonl"], r"with several sources the events path needs \{name\}"),
        (["--summary", "run-{name}.json"], r"the summary is one file for every stream: drop \{name\}"),
        (["--sources", "cameras.toml"], r"give --source or --sources, not both"),
    ],
)
def test_multi_stream_usage_errors_are_one_line(args, message, tmp_path):
    args = [str(tmp_path / a) if "." in a else a for a in args]
    proc = run_cli("--source", str(CLIPS[0]), "--source", str(CLIPS[1]), "--no-display", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(message, proc.stderr.strip().splitlines()[-1]), proc.stderr


def test_a_stream_writing_into_another_streams_input_is_refused(tmp_path):
    clip = tmp_path / "a.gif"
    clip.write_bytes(CLIPS[0].read_bytes())
    proc = run_cli("--source", str(clip), "--source", str(CLIPS[1]), "--no-display", "--frames", str(tmp_path / "{name}.gif"))
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr and clip.read_bytes() == CLIPS[0].read_bytes()


# ---------------------------------------------------------------- the cameras file


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.toml"
    path.write_text(text)
    return path


def test_a_cameras_file_gives_names_sources_and_own_options(tmp_path):
    (tmp_path / "clips").mkdir()
    path = _write(
        tmp_path,
        '[[camera]]\nname = "door"\nsource = "clips/door.mp4"\ndetect_every = 2\nkiosk_id = "door-left"\n'
        '[[camera]]\nsource = 0\nmin_face = 16\ngive_up_after = 0\n',
    )
    door, cam = load_cameras(path)
    assert door == Camera("door", str(tmp_path / "clips/door.mp4"), "door-left", CameraOverrides(detect_every=2))
    assert cam == Camera("cam0", "0", "cam0", CameraOverrides(min_face_px=16.0, give_up_after_s=0.0))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no cameras"),
        ("[[camera]]\nname = 'a'\n", "camera 1: needs a source"),
        ("[[camera]]\nsource = '0'\nfps = 3\n", "unknown option"),
        ("[[camera]]\nsource = '0'\ndetect_every = 0\n", "detect_every must be an integer >= 1"),
        ("[[camera]]\nsource = '0'\ndetect_every = 1.5\n", "detect_every must be an integer >= 1"),
        ("[[camera]]\nsource = '0'\nmin_face = nan\n", "min_face must be a positive number"),
        ("[[camera]]\nsource = '0'\nrefresh = true\n", "refresh must be an integer"),
        ("[[camera]]\nsource = '0'\nname = '../x'\n", "must be letters, digits"),
        ("[[camera]]\nsource = '0'\nname = 'a'\n[[camera]]\nsource = '1'\nname = 'a'\n", "used twice: a"),
        ("[camera]\nsource = '0'\n", "no cameras"),
        ("cameras = 1\n", "unknown top-level key"),
        ("[[camera]\n", "not valid TOML"),
    ],
)
def test_a_bad_cameras_file_is_refused_with_what_is_wrong(tmp_path, text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_cameras(_write(tmp_path, text))


def test_a_missing_cameras_file_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("--sources", str(tmp_path / "none.toml"), "--no-display")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: cameras file not found: {tmp_path / 'none.toml'}"


def test_default_names_are_readable_unique_and_safe_in_file_names():
    cameras = from_sources([str(CLIPS[0]), str(CLIPS[0]), "0", "rtsp://admin:pw@10.0.0.5:554/live?token=x"])
    assert [c.name for c in cameras] == ["two_people_walking", "two_people_walking-2", "cam0", "10.0.0.5-554"]
    assert unique_names(["a", "a", "a-2"]) == ["a", "a-2", "a-2-2"]


def test_each_camera_gets_its_own_paths_and_the_summary_stays_one_file():
    cams = from_sources([str(CLIPS[0]), str(CLIPS[1])])
    paths = per_camera_paths({"events": Path("out/{name}.jsonl"), "summary": Path("run.json"), "video": None}, cams)
    assert paths == {c.name: {"events": Path(f"out/{c.name}.jsonl")} for c in cams}


def test_the_tiled_window_fits_every_stream_into_its_cell():
    views = [np.full((270, 480, 3), 50, np.uint8), np.full((480, 640, 3), 200, np.uint8), None]
    grid = tile_views(views, cell_width=320)
    assert grid.shape == (2 * 180, 2 * 320, 3)  # 3 streams: 2x2 cells of 320x180
    assert grid[90, 160].tolist() == [50, 50, 50] and grid[90, 480].tolist() == [200, 200, 200]
    assert grid[270, 160].tolist() == [0, 0, 0]  # the stream with no frame yet
    assert grid[90, 320 + 10].tolist() == [0, 0, 0]  # a 4:3 view is letterboxed in its 16:9 cell


def test_a_kiosk_with_several_cameras_writes_one_store_with_each_visits_camera(model_path, tmp_path):
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(
        f'[[camera]]\nname = "two"\nsource = "{CLIPS[0]}"\nkiosk_id = "entrance"\n'
        f'[[camera]]\nname = "three"\nsource = "{CLIPS[1]}"\nkiosk_id = "aisle"\n'
    )
    data = tmp_path / "kiosk"
    summary = tmp_path / "run.json"
    proc = run_cli(
        "--sources", str(cameras), "--model", str(model_path), "--kiosk", "--data-dir", str(data), "--min-dwell", "0.5",
        "--quiet", "--summary", str(summary),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(data / "kiosk.sqlite3") as db:
        per_camera = dict(db.execute("SELECT camera, COUNT(*) FROM visits GROUP BY camera").fetchall())
    tracks = {s["name"]: s["tracks"] for s in json.loads(summary.read_text())["streams"]}
    # every person of these clips stays over 0.5 s: one visit each, under their camera's id
    assert per_camera == {"entrance": tracks["two"], "aisle": tracks["three"]} and all(tracks.values())
    assert "[entrance: 2, aisle: 3]" in proc.stderr


@pytest.mark.timeout(120)
def test_a_stop_signal_ends_every_stream_with_complete_outputs(model_path, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    summary = tmp_path / "run.json"
    args = ["--source", str(WEBCAM), "--source", str(WEBCAM), "--model", str(model_path), "--no-display", "--quiet",
            "--events", str(tmp_path / "events-{name}.jsonl"), "--output", str(tmp_path / "out-{name}.mp4"), "--summary", str(summary)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_camera.py"), *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        while not proc.stderr.readline().startswith("2 streams"):  # everything has opened
            assert proc.poll() is None
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    report = json.loads(summary.read_text())
    assert report["interrupted"] and [s["name"] for s in report["streams"]] == ["webcam_one_person", "webcam_one_person-2"]
    for stream in report["streams"]:
        assert 0 < stream["frames"] < 1337 and stream["interrupted"], {k: v for k, v in stream.items() if k != "people"}
        # the one person still in view was handed over at the stop, and the video plays
        events = (tmp_path / f"events-{stream['name']}.jsonl").read_text().splitlines()
        assert len(events) == stream["tracks"] == 1
        assert len(read_frames(tmp_path / f"out-{stream['name']}.mp4")) == stream["frames"]
