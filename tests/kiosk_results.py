"""Frame results and people as the analyzer hands them to a kiosk session, for session tests."""

from __future__ import annotations

from realtime.analyzer import FaceResult, TrackSummary
from realtime.kiosk.attention import project
from realtime.scheduling import FaceQuality
from realtime.smoothing import Estimates

FPS = 10.0
T0 = 1_750_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def face(track_id: int) -> FaceResult:
    """A well-seen man of 40 facing the camera."""
    q = FaceQuality(size_px=80, sharpness=50, frontal=1.0, score=0.8, usable=True)
    return FaceResult(track_id, (0, 0, 1, 1), 0.9, Estimates(40, 2.0, "male", 0.95), False, q, tuple(project(0, 0, scale=0.2)))


def summary(track_id: int, first: float, last: float) -> TrackSummary:
    """That man's record, seen from `first` to `last` seconds."""
    return TrackSummary(track_id, int(first * FPS), int(last * FPS), first, last, int((last - first) * FPS) + 1, 3,
                        Estimates(40.0, 2.0, "male", 0.95))
