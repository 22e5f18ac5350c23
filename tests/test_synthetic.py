"""Synthetic test videos: ground truth, the written file, determinism, and that
MediaPipe really finds the composited faces."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import read_frames
from tooling import scenes as syn

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "face_detection_full_range_sparse.tflite"

needs_faces = pytest.mark.skipif(not (syn.DEFAULT_FACES_DIR / "labels.csv").is_file(),
                                 reason=f"shared face data not found at {syn.DEFAULT_FACES_DIR}")

FACE = syn.FaceRecord("wiki/x.webp", "female", 30, "", "wiki", 200)


def _person(**kw) -> syn.Person:
    base = dict(id=0, face=FACE, first_frame=10, last_frame=49,
                path=syn.Path2D((100.0, 100.0), (300.0, 200.0)), size_start=80.0, size_end=120.0)
    base.update(kw)
    return syn.Person(**base)


# ----------------------------------------------------------------- pure geometry


def test_progress_without_pause_is_linear():
    path = syn.Path2D((0, 0), (10, 0))
    assert [syn.progress(path, t) for t in (0.0, 0.25, 1.0)] == [0.0, 0.25, 1.0]
    assert syn.progress(path, -1.0) == 0.0 and syn.progress(path, 2.0) == 1.0


def test_pause_holds_position_and_size():
    p = _person(path=syn.Path2D((100.0, 100.0), (300.0, 100.0), pause=(0.4, 0.6)))
    span = p.last_frame - p.first_frame
    f_a, f_b = p.first_frame + int(0.42 * span) + 1, p.first_frame + int(0.58 * span)
    assert syn.centre_at(p, f_a) == syn.centre_at(p, f_b)
    assert syn.size_at(p, f_a) == syn.size_at(p, f_b)
    assert syn.centre_at(p, p.first_frame) == (100.0, 100.0)
    assert syn.centre_at(p, p.last_frame) == pytest.approx((300.0, 100.0))


def test_box_follows_path_and_grows():
    p = _person()
    assert syn.box_at(p, p.first_frame) == (60, 60, 140, 140)
    assert syn.box_at(p, p.last_frame) == (240, 140, 360, 260)
    assert syn.box_at(p, p.first_frame - 1) is None and syn.box_at(p, p.last_frame + 1) is None


def test_states_turns_and_occlusions():
    p = _person(turn=syn.Turn(syn.Span(30, 34), "yaw", 0.5), occlusions=(syn.Span(20, 22),))
    assert [syn.state_at(p, f) for f in (9, 10, 20, 22, 23, 30, 35, 50)] == [
        "absent", "frontal", "occluded", "occluded", "frontal", "yaw", "frontal", "absent"]
    assert syn.box_at(p, 21) is None
    x1, y1, x2, y2 = syn.box_at(p, 32)
    full = syn.square_box(syn.centre_at(p, 32), syn.size_at(p, 32))
    assert (y1, y2) == (full[1], full[3]) and abs((x2 - x1) - 0.5 * (full[2] - full[0])) <= 1
    away = _person(turn=syn.Turn(syn.Span(30, 34), "away"))
    assert syn.box_at(away, 32) is None and syn.state_at(away, 32) == "away"


def test_iou():
    assert syn.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert syn.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert syn.iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


# --------------------------------------------------------------- scenarios/truth


@pytest.fixture(scope="module")
def scenario() -> syn.Scenario:
    # Every person gets a turn and an occlusion, so the truth covers all states.
    return syn.make_scenario(11, n_people=4, seconds=8, turn_prob=1.0, occlusion_prob=1.0)


@needs_faces
def test_ground_truth_matches_scenario(scenario):
    truth = syn.ground_truth(scenario)
    assert json.loads(json.dumps(truth)) == truth
    assert json.loads(json.dumps(syn.scenario_dict(scenario)))["people"][0]["face"]["file"]
    assert truth["n_frames"] == len(truth["frames"]) == scenario.n_frames == 200
    assert [p["id"] for p in truth["people"]] == list(range(4))
    firsts = [p["first_frame"] for p in truth["people"]]
    assert firsts == sorted(firsts) and len(set(firsts)) > 1, "entries are staggered and ids follow entry"
    assert {p["gender"] for p in truth["people"]} == {"female", "male"}
    states = set()
    for person, spec in zip(truth["people"], scenario.people):
        assert 1 <= person["age"] <= 100 and person["file"] == spec.face.file
        listed = [(f, e) for f, entries in enumerate(truth["frames"]) for e in entries if e["id"] == person["id"]]
        frames = [f for f, _ in listed]
        assert all(person["first_frame"] <= f <= person["last_frame"] for f in frames)
        assert len(frames) == len(set(frames)) == person["visible_frames"]
        assert sum(e["state"] == "frontal" for _, e in listed) == person["frontal_frames"]
        for a, b in person["occlusions"]:
            assert not any(a <= f <= b for f in frames), "occluded frames list no box"
        if person["turn"] and person["turn"]["kind"] == "away":
            t = person["turn"]
            assert not any(t["first"] <= f <= t["last"] for f in frames)
        hidden = sum(b - a + 1 for a, b in person["occlusions"])
        if person["turn"] and person["turn"]["kind"] == "away":
            hidden += person["turn"]["last"] - person["turn"]["first"] + 1
        assert person["visible_frames"] == person["last_frame"] - person["first_frame"] + 1 - hidden
        for _, e in listed:
            x1, y1, x2, y2 = e["box"]
            assert x1 < x2 and y1 < y2 and syn.box_inside(e["box"], scenario.width, scenario.height)
            states.add(e["state"])
    assert "frontal" in states and any(p["occlusions"] for p in truth["people"])


@needs_faces
def test_make_scenario_is_deterministic_by_seed(scenario):
    again = syn.make_scenario(11, n_people=4, seconds=8, turn_prob=1.0, occlusion_prob=1.0)
    assert again == scenario
    assert syn.ground_truth(again) == syn.ground_truth(scenario)
    other = syn.make_scenario(12, n_people=4, seconds=8, turn_prob=1.0, occlusion_prob=1.0)
    assert other != scenario
    short = replace(scenario, n_frames=6)
    for a, b in zip(syn.frames(short), syn.frames(short)):
        assert np.array_equal(a, b)


@needs_faces
def test_faces_are_drawn_inside_their_boxes(scenario):
    plain = replace(scenario, background=syn.Background("plain", (128, 128, 128)), noise=0.0)
    bg = syn.render_background(plain.background, plain.width, plain.height)
    truth = syn.ground_truth(plain)
    f = max(range(plain.n_frames), key=lambda i: len(truth["frames"][i]))
    frame = next(fr for i, fr in enumerate(syn.frames(plain)) if i == f)
    for entry in truth["frames"][f]:
        x1, y1, x2, y2 = entry["box"]
        changed = np.any(frame[y1:y2, x1:x2] != bg[y1:y2, x1:x2], axis=2).mean()
        assert changed > 0.9, f"face {entry['id']} box is mostly background"


def test_make_scenario_rejects_impossible_sizes():
    with pytest.raises(ValueError):
        syn.make_scenario(0, width=100, height=100, face_px=(60, 150))
    with pytest.raises(ValueError):
        syn.make_scenario(0, fps=0)


# ------------------------------------------------------------------ video file


@needs_faces
def test_render_writes_video_and_truth(tmp_path):
    sc = syn.make_scenario(3, n_people=3, width=320, height=240, fps=15, seconds=2)
    out = tmp_path / "clip.mp4"
    truth = syn.render(sc, out)
    assert syn.truth_path(out) == tmp_path / "clip.truth.json"
    assert json.loads(syn.truth_path(out).read_text()) == truth == syn.ground_truth(sc)
    cap = cv2.VideoCapture(str(out))
    try:
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15)
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (240, 320, 3)
            n += 1
    finally:
        cap.release()
    assert n == sc.n_frames == 30


@needs_faces
def test_render_h264_is_real_h264_that_opencv_reads(tmp_path):
    import av  # the dev extra, like pytest
    sc = syn.make_scenario(5, n_people=2, width=320, height=240, fps=15, seconds=2)
    out = tmp_path / "clip.mp4"
    truth = syn.render(sc, out, codec="h264")
    assert truth == syn.ground_truth(sc)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    frames = read_frames(out)
    assert len(frames) == sc.n_frames == 30
    assert {f.shape for f in frames} == {(240, 320, 3)}
    # lossy but faithful: the decoded frame is the rendered one up to coding noise
    first = next(syn.frames(sc))
    assert np.abs(frames[0].astype(np.int16) - first).mean() < 6


def test_render_rejects_an_unknown_codec(tmp_path):
    sc = syn.make_scenario(5, n_people=0, width=64, height=64, seconds=0.2)
    with pytest.raises(ValueError, match="codec"):
        syn.render(sc, tmp_path / "x.mp4", codec="vp9")  # type: ignore[arg-type]


# --------------------------------------------------------------- detectability


def _import_mediapipe():
    """mediapipe.tasks imports TensorFlow, if installed (the train extra), only for its
    API docs: ~10 s of a 2-core test run. Hide it for the duration of the import."""
    hide = "tensorflow" not in sys.modules
    if hide:
        sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ModuleNotFoundError
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    finally:
        if hide and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
    return mp, BaseOptions, vision


@needs_faces
def test_mediapipe_finds_the_composited_faces():
    """Measured with these seeds: 88% of frontal faces matched (IoU >= 0.3; 228/258),
    no false positives; over 12 ten-second scenarios it is 95% (module docstring).
    Seeds 0 and 3 each hold a hard face (a 3/4 view, a blurry tight crop)."""
    mp, BaseOptions, vision = _import_mediapipe()
    opts = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(MODEL)),
                                      running_mode=vision.RunningMode.IMAGE, min_detection_confidence=0.5)
    det = vision.FaceDetector.create_from_options(opts)
    found = total = false_pos = 0
    try:
        for seed in range(4):
            sc = syn.make_scenario(seed, n_people=4, width=640, height=480, fps=25, seconds=3, face_px=(80, 150))
            truth = syn.ground_truth(sc)
            for f, frame in enumerate(syn.frames(sc)):
                if f % 3:
                    continue
                rgb = np.ascontiguousarray(frame[:, :, ::-1])
                boxes = [(b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height)
                         for b in (d.bounding_box for d in det.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                                                   data=rgb)).detections)]
                used: set[int] = set()
                for entry in truth["frames"][f]:
                    if entry["state"] != "frontal":
                        continue
                    total += 1
                    scores = [(syn.iou(entry["box"], b), i) for i, b in enumerate(boxes) if i not in used]
                    best, idx = max(scores, default=(0.0, -1))
                    if best >= 0.3:
                        found += 1
                        used.add(idx)
                false_pos += len(boxes) - len(used)
    finally:
        det.close()
    assert total > 150
    assert found / total >= THRESHOLD, f"recall {found}/{total} = {found / total:.3f}"
    assert false_pos <= 3


THRESHOLD = 0.8  # measured 0.884; the margin absorbs detector build differences


# ------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tooling.scenes", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [
    ["--out", "x.mp4", "--size", "10x10"],
    ["--out", "x.mp4", "--size", "big"],
    ["--out", "x.mp4", "--fps", "0"],
    ["--out", "x.mp4", "--people", "-1"],
    ["--out", "x.mp4", "--face-px", "90-40"],
    ["--out", "x.avi"],
    [],
])
def test_cli_bad_arguments_fail_in_one_line(args, capsys):
    with pytest.raises(SystemExit) as exc:
        syn.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_bad_argument_has_no_traceback():
    res = _cli("--out", "x.mp4", "--seconds", "soon")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr


def test_cli_missing_faces_dir_fails_in_one_line(tmp_path, capsys):
    assert syn.main(["--out", str(tmp_path / "x.mp4"), "--faces-dir", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "labels.csv" in err


@needs_faces
def test_cli_writes_video(tmp_path):
    out = tmp_path / "cli.mp4"
    res = _cli("--out", str(out), "--people", "2", "--seconds", "1", "--size", "320x240", "--fps", "10")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 1 and "10 frames 320x240" in res.stdout
    assert out.is_file() and syn.truth_path(out).is_file()
