"""Which tracked faces get the model this frame.

Running the model on every face of every frame wastes most of its work: a person's age
does not change between frames, and a blurred or turned-away face only adds noise. So a
track is inferred when it is new, when its last inference is stale, or sooner when the
current view is clearly better than any seen so far; faces too small, too blurred or too
far turned to judge are skipped. The view's quality also weights its vote in smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class ScheduleOptions:
    refresh_frames: int = 15  # a track is re-inferred at least this often while usable
    # box side below which age is guesswork: smaller faces are tracked and counted but
    # never given to the model, so a person never seen this big has no age or gender
    min_estimate_px: float = 20.0
    min_sharpness: float = 8.0  # variance of the Laplacian on a 64 px grey thumbnail
    min_frontal: float = 0.3  # 1 is facing the camera, 0 is profile
    better_view: float = 1.3  # quality ratio over the best view so far that earns an early refresh
    # until a track's estimate is confident enough to show, it is refreshed this often, so
    # that a person passing by gets labels within a second rather than after many refreshes.
    # 1: on every detection frame. A small face's views weigh little (score), so it needs
    # many of them; at 2, two walkers in a 12.5 fps clip, boxed at their true size by the
    # small-face sweep, passed through with 8 and 5 views and no gender (docs/benchmarks.md)
    warmup_frames: int = 1
    max_per_frame: int = 64  # cap on one frame's batch, so a crowd cannot stall the stream


@dataclass(frozen=True)
class FaceQuality:
    size_px: float
    sharpness: float
    frontal: float
    score: float  # 0..1, the product of the three normalised terms
    usable: bool


@dataclass(frozen=True)
class Candidate:
    """A tracked face this frame, as the scheduler sees it."""

    track_id: int
    quality: FaceQuality
    frames_since_inference: int | None  # None: never inferred
    best_score: float  # best quality among this track's inferred views
    settled: bool = False  # the track's estimate is already shown


@dataclass(frozen=True)
class InferenceLog:
    """How a track has been inferred so far: what the scheduler needs besides this frame's view."""

    count: int = 0
    last_frame: int | None = None
    best_score: float = 0.0  # best quality among the inferred views

    def after(self, frame: int, quality: FaceQuality) -> InferenceLog:
        return InferenceLog(self.count + 1, frame, max(self.best_score, quality.score))

    def candidate(self, track_id: int, quality: FaceQuality, frame: int, settled: bool) -> Candidate:
        since = None if self.last_frame is None else frame - self.last_frame
        return Candidate(track_id, quality, since, self.best_score, settled)


def frontalness(keypoints: np.ndarray | None) -> float:
    """How squarely the face looks at the camera, from BlazeFace's eyes, nose and ears.

    Turning the head moves the nose off the eyes' midline and hides one ear behind the
    face, bringing it close to the nose; both are measured relative to the eye distance
    so that the result does not depend on the face's size.
    """
    if keypoints is None or len(keypoints) < 6 or not np.isfinite(keypoints).all():
        return 1.0  # no keypoints: do not penalise what cannot be measured
    right_eye, left_eye, nose, _mouth, right_ear, left_ear = keypoints[:6].astype(np.float64)
    axis = left_eye - right_eye
    eye_dist = float(np.hypot(*axis))
    if eye_dist < 1e-6:
        return 0.0
    unit = axis / eye_dist
    nose_offset = abs(float(np.dot(nose - (right_eye + left_eye) / 2.0, unit))) / eye_dist
    ear_right, ear_left = float(np.hypot(*(nose - right_ear))), float(np.hypot(*(nose - left_ear)))
    ear_balance = min(ear_right, ear_left) / max(ear_right, ear_left, 1e-6)
    nose_term = 1.0 - min(nose_offset / 0.6, 1.0)
    return float(np.clip(0.5 * nose_term + 0.5 * ear_balance, 0.0, 1.0))


def sharpness(image_bgr: np.ndarray, box: np.ndarray) -> float:
    """Variance of the Laplacian of the face box on a fixed-size thumbnail."""
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    grey = cv2.cvtColor(image_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    # a fixed size makes the figure comparable across face sizes
    thumb = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(thumb, cv2.CV_32F).var())


def assess(image_bgr: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None, options: ScheduleOptions) -> FaceQuality:
    x1, y1, x2, y2 = (float(v) for v in box)
    size = min(x2 - x1, y2 - y1)
    sharp = sharpness(image_bgr, box)
    frontal = frontalness(keypoints)
    score = min(size / 96.0, 1.0) * min(sharp / 60.0, 1.0) ** 0.5 * frontal
    usable = size >= options.min_estimate_px and sharp >= options.min_sharpness and frontal >= options.min_frontal
    return FaceQuality(size_px=size, sharpness=sharp, frontal=frontal, score=float(score), usable=usable)


def due(candidate: Candidate, options: ScheduleOptions) -> bool:
    if not candidate.quality.usable:
        return False
    if candidate.frames_since_inference is None:
        return True
    refresh = options.refresh_frames if candidate.settled else min(options.warmup_frames, options.refresh_frames)
    if candidate.frames_since_inference >= refresh:
        return True
    return candidate.quality.score >= candidate.best_score * options.better_view


def select(candidates: Sequence[Candidate], options: ScheduleOptions) -> list[int]:
    """Track ids to infer this frame: new tracks first, then the stalest, up to the cap."""
    chosen = [c for c in candidates if due(c, options)]
    chosen.sort(key=lambda c: (c.frames_since_inference is not None, -(c.frames_since_inference or 0)))
    return [c.track_id for c in chosen[: options.max_per_frame]]
