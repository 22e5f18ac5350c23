"""Drawing results on frames with supervision's annotators."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import supervision as sv

from .analyzer import FaceResult


def face_label(face: FaceResult) -> str:
    """'#3 male 92% | 27±3', with '…' for what is not yet known, and 'gender?' once the
    face has been seen enough (its age is shown) but the gender stays below the
    confidence the user asked for."""
    age_shown = face.age is not None and face.age_std is not None
    if face.gender is not None and face.gender_confidence is not None:
        gender = f"{face.gender} {face.gender_confidence:.0%}"
    else:
        gender = "gender?" if age_shown else "…"
    age = f"{face.age}±{face.age_std:.0f}" if age_shown else "…"
    return f"#{face.track_id} {gender} | {age}"


def to_detections(faces: Sequence[FaceResult]) -> sv.Detections:
    if not faces:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([f.box for f in faces], dtype=np.float32),
        confidence=np.array([f.confidence for f in faces], dtype=np.float32),
        tracker_id=np.array([f.track_id for f in faces], dtype=int),
    )


class Overlay:
    """Boxes coloured by track, one label per face, and a status line."""

    def __init__(self, scale: float = 1.0) -> None:
        thickness = max(1, round(2 * scale))
        self._boxes = sv.BoxAnnotator(thickness=thickness, color_lookup=sv.ColorLookup.TRACK)
        self._labels = sv.LabelAnnotator(
            text_scale=0.5 * scale,
            text_thickness=thickness // 2 or 1,
            text_padding=max(2, round(4 * scale)),
            color_lookup=sv.ColorLookup.TRACK,
            smart_position=True,
        )
        self.scale = scale

    @classmethod
    def for_frame(cls, width: int, height: int) -> "Overlay":
        # text readable on a 1080p frame without covering a 320x240 one
        return cls(scale=float(np.clip(max(width, height) / 960.0, 0.6, 2.0)))

    def annotate(self, frame: np.ndarray, faces: Sequence[FaceResult], status: str = "") -> np.ndarray:
        """Draws on `frame` in place and returns it."""
        detections = to_detections(faces)
        if len(detections):
            self._boxes.annotate(frame, detections)
            self._labels.annotate(frame, detections, labels=[face_label(f) for f in faces])
        if status:
            draw_status(frame, status, self.scale)
        return frame


def draw_status(frame: np.ndarray, text: str, scale: float) -> None:
    font, size, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, max(1, round(scale))
    (w, h), baseline = cv2.getTextSize(text, font, size, thickness)
    pad = round(4 * scale)
    cv2.rectangle(frame, (0, 0), (w + 2 * pad, h + baseline + 2 * pad), (0, 0, 0), -1)
    cv2.putText(frame, text, (pad, pad + h), font, size, (255, 255, 255), thickness, cv2.LINE_AA)
