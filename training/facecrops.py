"""Dataset images to model crops through the live pipeline's own detector and crop.

Portrait datasets are already cropped around the face, often tightly (UTKFace), which
leaves BlazeFace too little context to fire. Each image is therefore padded on every
side by half its size (replicating the border, as a face in a video frame has
surroundings) before detection; the crop itself is `realtime.crops.face_crop`, exactly
as served. Where no face is found the whole image is the crop, and the caller is told,
so that the rate can be reported rather than silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from realtime.crops import face_crop, whole_image_crop
from realtime.detection import FaceDetector


@dataclass(frozen=True)
class CropResult:
    crop: np.ndarray  # size x size x 3 BGR uint8
    face_found: bool
    score: float  # detector confidence, 0 when not found


def crop_for_model(image: np.ndarray, detector: FaceDetector, size: int, margin: float) -> CropResult:
    """The crop a model sees for this portrait: the largest confident face, else the image."""
    pad = max(image.shape[:2]) // 2
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = detector.detect(padded)
    if len(found) == 0:
        return CropResult(whole_image_crop(image, size), False, 0.0)
    # the portrait's subject is the largest face; a background face is smaller
    areas = (found.xyxy[:, 2] - found.xyxy[:, 0]) * (found.xyxy[:, 3] - found.xyxy[:, 1])
    i = int(np.argmax(areas * found.confidence))
    crop = face_crop(padded, found.xyxy[i], found.data["keypoints"][i], size, margin)
    return CropResult(crop, True, float(found.confidence[i]))
