"""Face detection on the real shared clips, tiling of large frames, model file checks."""

import shutil

import cv2
import numpy as np
import pytest

from realtime.detection import DetectorOptions, FaceDetector
from realtime.detectors.mediapipe import verified_model_path
from realtime.errors import ModelError
from realtime.paths import MODELS_DIR
from realtime.tiling import tile_grid
from tests.conftest import WALKING, WEBCAM, read_frames


def test_one_face_in_every_sampled_webcam_frame(detector):
    frames = read_frames(WEBCAM)[::25]
    counts = [len(detector.detect(f)) for f in frames]
    assert counts.count(1) == len(frames), counts


def test_keypoints_are_in_frame_pixels(detector):
    frame = read_frames(WEBCAM, 1)[0]
    d = detector.detect(frame)
    (x1, y1, x2, y2), kps = d.xyxy[0], d.data["keypoints"][0]
    right_eye, left_eye, nose = kps[0], kps[1], kps[2]
    assert x1 < right_eye[0] < left_eye[0] < x2  # subject's right eye on the image's left
    assert y1 < nose[1] < y2


def test_full_range_finds_the_three_walkers(detector):
    frames = read_frames(WALKING)
    mean = np.mean([len(detector.detect(f)) for f in frames])
    assert mean >= 2.6, mean


def test_short_range_model_loads_and_detects_close_faces():
    with FaceDetector.create_from_options(DetectorOptions(model="short")) as short:
        frame = read_frames(WEBCAM, 1)[0]
        assert len(short.detect(frame)) == 1


@pytest.mark.parametrize("width,height", [(1920, 1080), (640, 480), (3840, 2160)])
def test_tiles_cover_the_frame_with_overlap(width, height):
    tiles = tile_grid(width, height, 960, 0.25)
    covered = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        covered[y1:y2, x1:x2] = True
    assert covered.all()


def small_faces_frame() -> np.ndarray:
    """A 1080p frame holding the walkers at a distance: faces about 35-45 px wide."""
    frame = read_frames(WALKING)[30]
    small = cv2.resize(frame, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    h, w = small.shape[:2]
    for x, y in [(100, 100), (1300, 600)]:
        canvas[y : y + h, x : x + w] = small
    return canvas


def test_tiling_finds_small_faces_the_whole_frame_misses(detector):
    frame = small_faces_frame()
    whole = detector.engine.detect(frame)  # one pass over the whole frame
    tiled = detector.detect(frame)
    assert detector.needs_tiling(frame.shape)
    assert len(tiled) >= 5, len(tiled)
    assert len(tiled) > len(whole)
    # every box maps back onto one of the two pasted copies
    for x1, y1, x2, y2 in tiled.xyxy:
        assert (100 <= x1 and x2 <= 460 and 100 <= y1 and y2 <= 303) or (1300 <= x1 and x2 <= 1660 and 600 <= y1 and y2 <= 803)


def test_region_detection_finds_known_faces(detector):
    frame = small_faces_frame()
    full = detector.detect(frame)
    regions = detector.detect_regions(frame, full.xyxy)
    assert len(regions) >= len(full) - 1


def test_altered_detector_file_is_refused(tmp_path):
    for name in ("face_detection_full_range_sparse.tflite", "face_detection_short_range.tflite"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    assert verified_model_path("full", tmp_path).is_file()
    data = bytearray((tmp_path / "face_detection_full_range_sparse.tflite").read_bytes())
    data[5000] ^= 0xFF
    (tmp_path / "face_detection_full_range_sparse.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupted"):
        FaceDetector.create_from_options(DetectorOptions(model_dir=tmp_path))
    (tmp_path / "face_detection_short_range.tflite").unlink()
    with pytest.raises(ModelError, match="missing"):
        FaceDetector.create_from_options(DetectorOptions(model="short", model_dir=tmp_path))
