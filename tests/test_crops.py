"""The shared crop: geometry, alignment by the eyes, on real faces."""

import cv2
import numpy as np

from realtime.crops import crop_matrix, eye_angle, face_crop, whole_image_crop
from tests.conftest import WEBCAM, read_frames


def test_matrix_maps_output_centre_to_box_centre():
    box = np.array([100.0, 50.0, 200.0, 170.0])
    for angle in (0.0, 0.3, -1.0):
        m = crop_matrix(box, angle, 224, 0.2)
        centre = m @ np.array([112.0, 112.0, 1.0])
        assert np.allclose(centre, [150.0, 110.0])


def test_crop_covers_box_plus_margin():
    box = np.array([100.0, 100.0, 200.0, 200.0])
    m = crop_matrix(box, 0.0, 100, 0.25)
    corner = m @ np.array([0.0, 0.0, 1.0])
    assert np.allclose(corner, [75.0, 75.0])  # 100 px box + 25 px each side


def test_output_shape_and_dtype():
    frame = read_frames(WEBCAM, 1)[0]
    crop = face_crop(frame, np.array([150, 80, 250, 200]), None, 224, 0.2)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert whole_image_crop(frame, 96).shape == (96, 96, 3)


def test_box_at_frame_edge_is_filled_not_black():
    frame = read_frames(WEBCAM, 1)[0]
    crop = face_crop(frame, np.array([-50, -50, 50, 50]), None, 64, 0.2)
    assert crop.min() > 0 or crop.mean() > 20


def test_rotated_face_comes_out_level(detector):
    frame = read_frames(WEBCAM, 1)[0]
    h, w = frame.shape[:2]
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)  # 25 degrees counter-clockwise
    tilted = cv2.warpAffine(frame, rotation, (w, h), borderMode=cv2.BORDER_REPLICATE)
    found = detector.detect(tilted)
    assert len(found) == 1
    kps = found.data["keypoints"][0]
    assert abs(np.degrees(eye_angle(kps))) > 15
    aligned = face_crop(tilted, found.xyxy[0], kps, 256, 0.4)
    again = detector.detect(aligned)
    assert len(again) == 1
    assert abs(np.degrees(eye_angle(again.data["keypoints"][0]))) < 6


def test_missing_keypoints_mean_no_rotation():
    assert eye_angle(None) == 0.0
    assert eye_angle(np.full((6, 2), np.nan)) == 0.0
