"""The one crop function that training, evaluation and live inference share.

A model learns what its crops look like; if serving cropped differently from training,
accuracy measured offline would not hold live. So every face image, from a dataset or a
camera, goes through `face_crop`: a square around the detector box, enlarged by a margin
on each side, rotated so the eyes are level, resized to the model's input, in one
affine warp (one pass over the pixels, whatever the face size).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def eye_angle(keypoints: np.ndarray | None) -> float:
    """Roll of the face in radians from BlazeFace's eye keypoints (0 when unknown)."""
    if keypoints is None or len(keypoints) < 2 or not np.isfinite(keypoints[:2]).all():
        return 0.0
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    # keypoint 0 is the subject's right eye, on the image's left
    return math.atan2(ly - ry, lx - rx)


def crop_matrix(box: np.ndarray, angle: float, size: int, margin: float) -> np.ndarray:
    """2x3 affine map from output pixel (u, v) to source pixel, for cv2's inverse-map warp."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    a = side / size
    cos, sin = a * math.cos(angle), a * math.sin(angle)
    half = size / 2.0
    return np.array(
        [
            [cos, -sin, cx - cos * half + sin * half],
            [sin, cos, cy - sin * half - cos * half],
        ],
        dtype=np.float64,
    )


def face_crop(
    image: np.ndarray,
    box: np.ndarray,
    keypoints: np.ndarray | None,
    size: int,
    margin: float,
    align: bool = True,
) -> np.ndarray:
    """A size x size crop of the face in `box` (x1, y1, x2, y2), same channels as `image`.

    Pixels outside the frame are filled by replicating the border, which the models
    tolerate far better than black bars at the frame's edge.
    """
    angle = eye_angle(keypoints) if align else 0.0
    matrix = crop_matrix(np.asarray(box), angle, size, margin)
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def whole_image_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The whole image as the crop: the fallback when no face is detected in a portrait."""
    interpolation = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)
