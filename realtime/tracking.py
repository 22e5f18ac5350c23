"""Persistent per-person identities: supervision's ByteTrack plus the track lifecycle.

ByteTrack associates boxes frame to frame (Kalman motion, IoU matching, and a second
pass that lets low-confidence boxes extend existing tracks through partial occlusion).
On top of it, `TrackBook` keeps each person's lifecycle: when the person was first and
last seen, where the face is and how it moves; it ends a track after `timeout_s` without
a detection, which is when its event is written. What is estimated about the face is
the analyzer's (smoothing.py), what the kiosk makes of it the kiosk's: the book alone
writes a `Track`.

Public ids are the book's own, allocated 1, 2, 3... in order of appearance: if ByteTrack
ever revives one of its ids after the book has closed that person, the revival becomes
a new person instead of a second event under an old id.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from .errors import UserError

# longest track timeout accepted: a person unseen for an hour has left, and ByteTrack
# keeps a lost track's state for the whole timeout (counted in frames, so an infinite
# one cannot even be computed)
MAX_TIMEOUT_S = 3600.0
# weight of the previous velocity: detector boxes jitter by a few pixels, so the raw
# frame-to-frame step alone would shake the boxes drawn between detections
VELOCITY_SMOOTHING = 0.5


@dataclass(frozen=True)
class TrackerOptions:
    timeout_s: float = 1.0  # a track ends after this long without a detection
    activation_threshold: float = 0.5  # detections below this only extend existing tracks
    matching_threshold: float = 0.8  # ByteTrack's IoU-distance gate
    min_frames: int = 3  # shorter tracks are detector noise: no event is written for them

    def __post_init__(self) -> None:
        # written so that NaN fails every test
        if not 0.0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise UserError(f"track timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} s, got {self.timeout_s}")


@dataclass
class Track:
    """One person's presence in view; written by `TrackBook` only."""

    track_id: int
    first_frame: int
    first_time: float
    last_frame: int
    last_time: float
    box: np.ndarray
    keypoints: np.ndarray | None
    confidence: float
    frames_seen: int = 1
    # box motion per frame (x1, y1, x2, y2), smoothed over detections: moves the box on
    # frames the detector skips (AnalyzerOptions.detect_every)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))

    def predicted_box(self, frame: int) -> np.ndarray:
        """Where the face should be at `frame`, moving on from its last detection."""
        return self.box + self.velocity * float(frame - self.last_frame)

    def predicted_keypoints(self, frame: int) -> np.ndarray | None:
        if self.keypoints is None:
            return None
        # the points move with the box's centre
        vx, vy = (self.velocity[0] + self.velocity[2]) / 2, (self.velocity[1] + self.velocity[3]) / 2
        return self.keypoints + np.array([vx, vy], np.float32) * float(frame - self.last_frame)


class FaceTracker:
    """ByteTrack tuned in seconds rather than frames."""

    def __init__(self, options: TrackerOptions, fps: float) -> None:
        self.options = options
        fps = fps if fps and math.isfinite(fps) and fps > 0 else 30.0
        with warnings.catch_warnings():
            # ByteTrack is deprecated in supervision in favour of `trackers`, which pins
            # opencv-python and so cannot share an environment with mediapipe's OpenCV
            warnings.simplefilter("ignore", FutureWarning)
            self._byte = sv.ByteTrack(
                track_activation_threshold=options.activation_threshold,
                # ByteTrack counts its buffer in frames at 30 fps and rescales by frame_rate
                lost_track_buffer=max(1, math.ceil(options.timeout_s * 30)),
                minimum_matching_threshold=options.matching_threshold,
                frame_rate=max(1, round(fps)),
            )

    def update(self, detections: sv.Detections) -> sv.Detections:
        """Detections that belong to a track, with `tracker_id` set."""
        return self._byte.update_with_detections(detections)


class TrackBook:
    """The people currently in view and the moment each one leaves."""

    def __init__(self, options: TrackerOptions) -> None:
        self.options = options
        self.active: dict[int, Track] = {}
        self._public: dict[int, int] = {}  # ByteTrack id -> public id
        self._next_id = 1

    def observe(self, tracked: sv.Detections, frame: int, time: float) -> list[Track]:
        """Record this frame's tracked detections; returns their tracks in the same order."""
        tracks = []
        keypoints = tracked.data.get("keypoints")
        for i, byte_id in enumerate(tracked.tracker_id if tracked.tracker_id is not None else []):
            kps = None if keypoints is None else np.asarray(keypoints[i])
            box, confidence = tracked.xyxy[i].copy(), float(tracked.confidence[i])
            public = self._public.get(int(byte_id))
            track = self.active.get(public) if public is not None else None
            if track is None:
                track = self._open(int(byte_id), Track(self._next_id, frame, time, frame, time, box, kps, confidence))
            else:
                _advance(track, frame, time, box, kps, confidence)
            tracks.append(track)
        return tracks

    def _open(self, byte_id: int, track: Track) -> Track:
        self._next_id += 1
        self._public[byte_id] = track.track_id
        self.active[track.track_id] = track
        return track

    def expire(self, time: float) -> list[Track]:
        """Tracks unseen for longer than the timeout, removed from the book."""
        gone = [t for t in self.active.values() if time - t.last_time > self.options.timeout_s]
        return self._close(gone)

    def close_all(self) -> list[Track]:
        return self._close(list(self.active.values()))

    def _close(self, tracks: list[Track]) -> list[Track]:
        for track in tracks:
            del self.active[track.track_id]
        ids = {t.track_id for t in tracks}
        self._public = {b: p for b, p in self._public.items() if p not in ids}
        return [t for t in sorted(tracks, key=lambda t: t.track_id) if t.frames_seen >= self.options.min_frames]


def _advance(track: Track, frame: int, time: float, box: np.ndarray, keypoints: np.ndarray | None, confidence: float) -> None:
    """A known face detected again."""
    step = (box - track.box) / max(1, frame - track.last_frame)
    track.velocity = (VELOCITY_SMOOTHING * track.velocity + (1 - VELOCITY_SMOOTHING) * step).astype(np.float32)
    track.last_frame, track.last_time = frame, time
    track.box, track.keypoints, track.confidence = box, keypoints, confidence
    track.frames_seen += 1
