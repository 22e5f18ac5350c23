"""Motion-gated scanning: the change mask on real frames, and the analyzer with gating off and on."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.detection import DetectorOptions, check_options
from realtime.errors import UserError
from realtime.motion import MotionMask, TileGate, changed
from realtime.tiling import scan_plan
from tests.conftest import WEBCAM, read_face
from tooling import scenes
from tooling.bench import match_frame

FRAME_SHAPE = (1080, 1920, 3)


@pytest.fixture(scope="module")
def room() -> np.ndarray:
    """A real webcam frame, scaled to 1080p as a fixed camera's view."""
    cap = cv2.VideoCapture(str(WEBCAM))
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    assert ok
    return cv2.resize(frame, FRAME_SHAPE[1::-1], interpolation=cv2.INTER_LINEAR)


def noisy(frame: np.ndarray, seed: int) -> np.ndarray:
    """The frame again as a camera gives it: sensor noise of 2 grey levels."""
    noise = np.random.default_rng(seed).normal(0.0, 2.0, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def test_a_still_frame_pair_shows_no_change(room):
    motion = MotionMask()
    assert motion.update(room).pixels.all()  # the first frame: nothing known yet
    mask = motion.update(noisy(room, 1))
    assert not mask.pixels.any()
    assert not any(changed(mask, area) for area in scan_plan(FRAME_SHAPE, DetectorOptions()).sweep)


def test_a_face_pasted_at_a_new_place_changes_its_tile_only(room, labels):
    sweep = scan_plan(FRAME_SHAPE, DetectorOptions()).sweep  # the whole frame, then 8 tiles
    motion = MotionMask()
    motion.update(room)
    motion.update(noisy(room, 1))
    moved = noisy(room, 2)
    # inside the top-left tile only: its neighbours start at x=427 and y=440
    moved[200:280, 200:280] = cv2.resize(read_face(labels[0]), (80, 80))
    mask = motion.update(moved)
    assert [changed(mask, area) for area in sweep] == [True, True] + [False] * 7


def test_a_still_tile_waits_for_its_safety_search_and_a_changed_one_does_not(room, labels):
    sweep = scan_plan(FRAME_SHAPE, DetectorOptions()).sweep
    motion, gate = MotionMask(), TileGate(sweep, rescan=3)
    gate.observe(motion.update(room))
    assert gate.select(range(len(sweep))) == list(range(len(sweep)))  # the first frame: all
    gate.observe(motion.update(noisy(room, 1)))
    assert gate.select(range(len(sweep))) == []
    moved = noisy(room, 2)
    moved[200:280, 200:280] = cv2.resize(read_face(labels[0]), (80, 80))
    gate.observe(motion.update(moved))
    # the change is remembered until the tile is due: here only tiles 2 and up are
    assert gate.select(range(2, len(sweep))) == []
    gate.observe(motion.update(noisy(room, 3)))
    assert gate.select(range(len(sweep))) == [0, 1, *range(2, len(sweep))]  # changed, and 3 frames still
    gate.observe(motion.update(noisy(room, 4)))
    assert gate.select(range(len(sweep))) == []


def test_the_rescan_interval_is_checked():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="rescan"):
            check_options(DetectorOptions(still_rescan_s=bad))


def scene() -> scenes.Scenario:
    """A fixed 1080p camera: a static background, four people walking in, 40-90 px faces."""
    return scenes.make_scenario(0, 4, 1920, 1080, 25.0, 4.0, face_px=(40, 90))


def run(still_rescan_s: float) -> tuple[list[np.ndarray], list[list[tuple[int, tuple]]], int]:
    """Per frame: the detections and the faces shown, and the detector passes in all."""
    detector = dataclasses.replace(DetectorOptions(), still_rescan_s=still_rescan_s)
    boxes, shown = [], []
    with Analyzer.create_from_options(AnalyzerOptions(device="cpu", fps=25.0, detector=detector)) as analyzer:
        engine, passes = analyzer.detector.engine, []
        detect = engine.detect
        engine.detect = lambda image: passes.append(1) or detect(image)  # counts the real engine's passes
        for index, frame in enumerate(scenes.frames(scene())):
            shown.append([(f.track_id, f.box) for f in analyzer.process(frame, index, index / 25.0).faces])
            boxes.append(analyzer._previous.copy())
        assert (analyzer._gate is None) == (still_rescan_s == 0)  # the gate is made with the plan
    return boxes, shown, len(passes)


@pytest.fixture(scope="module")
def gating_off():
    return run(0.0)


def test_gating_off_is_the_plain_sweep(gating_off):
    # a rescan interval of one detection frame searches every due tile, through the gate
    boxes, _, passes = run(0.01)
    assert passes == gating_off[2]
    assert all(np.array_equal(a, b) for a, b in zip(boxes, gating_off[0], strict=True))


def people_found(shown: list[list[tuple[int, tuple]]], truth: dict) -> dict[int, int]:
    """Frames in which each true person was shown, by their id."""
    found: dict[int, int] = {}
    for faces, frame_truth in zip(shown, truth["frames"]):
        for true_id, _ in match_frame(frame_truth, faces):
            found[true_id] = found.get(true_id, 0) + 1
    return found


def test_gating_on_finds_the_same_people_with_fewer_passes(gating_off):
    truth = scenes.ground_truth(scene())
    _, shown, passes = run(DetectorOptions().still_rescan_s)
    off, on = people_found(gating_off[1], truth), people_found(shown, truth)
    assert len(off) >= 3 and set(on) == set(off)
    assert sum(on.values()) >= 0.97 * sum(off.values())
    assert passes < 0.85 * gating_off[2]
