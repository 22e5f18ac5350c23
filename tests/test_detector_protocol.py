"""The detector extension point: the protocol, tiling through it, and the model's detector convention."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest
import supervision as sv

from export.metadata import read_metadata, read_props, write_metadata
from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.detection import (
    DetectorOptions,
    FaceDetector,
    convention_problem,
    create_engine,
)
from realtime.detectors.mediapipe import MediaPipeFaceDetector
from realtime.errors import UserError
from realtime.metadata import BLAZEFACE_FULL, BLAZEFACE_KEYPOINTS, ModelMetadata
from realtime.paths import DEFAULT_MODEL
from realtime.tiling import TiledDetector
from tests.conftest import FACES, WEBCAM, read_frames


@pytest.fixture(scope="module")
def engine():
    with MediaPipeFaceDetector.create_from_options(DetectorOptions()) as bare:
        yield bare


def test_mediapipe_and_its_tiled_wrapper_are_face_detectors(engine, detector):
    for candidate in (engine, detector):
        assert isinstance(candidate, FaceDetector)
        assert candidate.name == "blazeface-full" and candidate.input_size == 192
        assert candidate.keypoint_layout == BLAZEFACE_KEYPOINTS
    # what the detector names itself is what models trained before the field record
    assert ModelMetadata.__dataclass_fields__["detector"].default == engine.name == BLAZEFACE_FULL
    assert not isinstance(object(), FaceDetector)


def test_short_range_names_itself_and_reads_its_input_side():
    with MediaPipeFaceDetector.create_from_options(DetectorOptions(model="short")) as short:
        assert short.name == "blazeface-short" and short.input_size == 128


def test_keypoints_follow_the_declared_layout(engine):
    found = engine.detect(read_frames(WEBCAM, 1)[0])
    assert len(found) == 1
    points = dict(zip(engine.keypoint_layout, found.data["keypoints"][0]))
    assert found.data["keypoints"].shape == (1, len(engine.keypoint_layout), 2)
    x1, _, x2, y2 = found.xyxy[0]
    # the subject's right eye is on the image's left; the mouth below the nose, both in the box
    assert x1 < points["right_eye"][0] < points["left_eye"][0] < x2
    assert points["nose_tip"][1] < points["mouth_center"][1] < y2


def test_the_factory_builds_the_engine_the_options_name():
    with FaceDetector.create_from_options(DetectorOptions()) as made:
        assert isinstance(made, TiledDetector) and isinstance(made.engine, MediaPipeFaceDetector)
    with pytest.raises(UserError, match="unknown detector engine 'nope'"):
        create_engine(DetectorOptions(engine="nope"))


# ------------------------------------------------------------------ tiling through the protocol


@pytest.fixture(scope="module")
def portraits_frame(engine, labels):
    """A 1080p frame holding twelve Wikipedia portraits at their own size (faces 70-110 px):
    too small for one pass over the whole frame, and each found alone by the detector."""
    rows = [r for r in labels if r["source"] == "wiki"][:40]
    images = [cv2.imread(str(FACES / r["file"])) for r in rows]
    alone = [image for image in images if len(engine.detect(image)) == 1][:12]
    assert len(alone) == 12
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    places = []
    for i, image in enumerate(alone):
        row, col = divmod(i, 4)
        x, y = 100 + col * 480, 100 + row * 340
        h, w = image.shape[:2]
        frame[y : y + h, x : x + w] = image
        places.append((x, y, x + w, y + h))
    return frame, places


def portrait_of(box: np.ndarray, places: list[tuple[int, int, int, int]]) -> int | None:
    x1, y1, x2, y2 = box
    inside = [i for i, (px1, py1, px2, py2) in enumerate(places) if px1 - 2 <= x1 and x2 <= px2 + 2 and py1 - 2 <= y1 and y2 <= py2 + 2]
    return inside[0] if inside else None


def test_tiling_any_detector_finds_the_faces_one_pass_misses(engine, portraits_frame):
    frame, places = portraits_frame
    tiled = TiledDetector(engine, DetectorOptions())
    whole = engine.detect(frame)
    found = tiled.detect(frame)
    # measured: 1 face in one pass over the frame, 9 of the 12 in the tiled scan
    assert len(whole) <= 1 and len(found) >= 8, (len(whole), len(found))
    owners = [portrait_of(box, places) for box in found.xyxy]
    assert None not in owners, found.xyxy  # every box mapped back onto its portrait
    assert len(set(owners)) == len(owners)  # one box per face after merging the tiles
    points = found.data["keypoints"]
    assert (points[:, 0, 0] < points[:, 1, 0]).all()  # keypoints moved with their boxes
    # eyes, nose and mouth lie in their box (the ears may stick out of it)
    inner = points[:, :4]
    assert ((found.xyxy[:, [0]] <= inner[..., 0]) & (inner[..., 0] <= found.xyxy[:, [2]])).all()
    assert ((found.xyxy[:, [1]] <= inner[..., 1]) & (inner[..., 1] <= found.xyxy[:, [3]])).all()


def test_regions_around_known_faces_find_them_again(engine, portraits_frame):
    frame, places = portraits_frame
    tiled = TiledDetector(engine, DetectorOptions())
    found = tiled.detect(frame)
    again = tiled.detect_regions(frame, found.xyxy)
    # measured: 7 of the 9 in one mosaic pass, each over the box the scan found
    assert len(again) >= 6, len(again)
    assert sv.box_iou_batch(again.xyxy, found.xyxy).max(axis=1).min() >= 0.4
    assert all(portrait_of(box, places) is not None for box in again.xyxy)


# ------------------------------------------------------------------ the model's detector convention


def model_copy(tmp_path, **changes: object):
    """The shipped model with some metadata fields changed, written beside the test."""
    path = tmp_path / "changed.onnx"
    shutil.copy(DEFAULT_MODEL, path)
    meta = read_metadata(path)
    write_metadata(path, ModelMetadata(**{**meta.__dict__, **changes}))
    return path


def realtime_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "realtime" and r.levelno == logging.WARNING]


def test_models_without_the_fields_keep_the_blazeface_convention(engine, tmp_path):
    import onnx

    # a model exported before the fields existed: its file has neither
    proto = onnx.load(str(DEFAULT_MODEL))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in ("detector", "keypoint_layout")]
    del proto.metadata_props[:]
    for key, value in kept:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    assert "detector" not in read_props(old)
    meta = read_metadata(old)
    assert meta.detector == BLAZEFACE_FULL and meta.keypoint_layout == BLAZEFACE_KEYPOINTS
    assert convention_problem(engine, meta) == ""


def test_the_fields_survive_the_model_file(tmp_path):
    layout = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")
    meta = read_metadata(model_copy(tmp_path, detector="scrfd-10g", keypoint_layout=layout))
    assert meta.detector == "scrfd-10g" and meta.keypoint_layout == layout
    with pytest.raises(ValueError, match="keypoint_layout"):
        ModelMetadata(**{**meta.__dict__, "keypoint_layout": (1, 2)})


def test_a_model_from_another_detector_is_reported_at_start(tmp_path, caplog):
    path = model_copy(tmp_path, detector="scrfd-10g")
    with caplog.at_level(logging.WARNING, logger="realtime"), Analyzer.create_from_options(AnalyzerOptions(model_path=path, device="cpu")):
        pass
    (line,) = realtime_warnings(caplog)
    assert "scrfd-10g" in line and "blazeface-full" in line and "\n" not in line


def test_the_matching_detector_starts_silently(caplog):
    with caplog.at_level(logging.WARNING, logger="realtime"), Analyzer.create_from_options(AnalyzerOptions(device="cpu")):
        pass
    assert realtime_warnings(caplog) == []


def test_another_keypoint_layout_is_a_mismatch_too(engine, tmp_path):
    reordered = (BLAZEFACE_KEYPOINTS[1], BLAZEFACE_KEYPOINTS[0], *BLAZEFACE_KEYPOINTS[2:])
    meta = read_metadata(model_copy(tmp_path, keypoint_layout=reordered))
    problem = convention_problem(engine, meta)
    assert "keypoints" in problem and "left_eye, right_eye" in problem


@pytest.mark.parametrize(
    "device, available, engine",
    [
        ("auto", ["CPUExecutionProvider"], "mediapipe"),
        ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], "onnx"),
        ("auto", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "onnx"),
        ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], "mediapipe"),
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], "onnx"),
        ("tensorrt", ["CPUExecutionProvider"], "onnx"),  # the onnx engine then refuses the missing provider
    ],
)
def test_auto_picks_onnx_on_a_gpu_and_mediapipe_on_a_cpu(device, available, engine):
    from realtime.detection import choose_engine

    assert choose_engine(device, available) == engine


def test_auto_on_this_machine_runs_a_working_engine():
    import onnxruntime as ort

    from realtime.detection import DetectorOptions, create_engine, resolve_engine

    name = resolve_engine("auto", "auto")
    assert name == ("onnx" if "CUDAExecutionProvider" in ort.get_available_providers() else "mediapipe")
    with create_engine(DetectorOptions(engine=name)) as engine:
        assert engine.input_size == 192
    assert resolve_engine("onnx", "cpu") == "onnx"
