"""The analyzer: frames in, typed per-face results out.

    detection -> tracking -> scheduling -> crops -> model (one batch) -> smoothing

It owns no I/O: the command line, the kiosk, the benchmark and the evaluation all feed
it frames and read its results.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from . import scheduling, smoothing
from .crops import face_crop
from .detection import DetectorOptions, FaceDetector, merge_detections
from .detection import check_options as check_detector_options
from .errors import UserError
from .model import AgeGenderModel
from .paths import DEFAULT_MODEL
from .scheduling import Candidate, FaceQuality, ScheduleOptions
from .smoothing import SmoothingOptions
from .tracking import FaceTracker, Track, TrackBook, TrackerOptions

STAGES = ("detect", "track", "crop", "infer")
# a detection overlapping every tracked box less than this is a face not yet tracked
NEW_FACE_IOU = 0.3
SCAN_SECONDS = 0.3
# detections a second that the automatic detector interval keeps: at 15 Hz a face walking
# across the frame moves a few pixels between detections, and ByteTrack's Kalman filter
# and the boxes' velocity carry it (at 30 fps: 2.5% fewer true face boxes shown, no
# identity switches, 1.5x the frames per second; docs/benchmarks.md)
DETECT_HZ = 15.0


@dataclass(frozen=True)
class AnalyzerOptions:
    model_path: Path = DEFAULT_MODEL
    device: str = "auto"
    fps: float = 25.0  # of the source: converts the tracker's timeouts between frames and seconds
    detector: DetectorOptions = DetectorOptions()
    tracker: TrackerOptions = TrackerOptions()
    schedule: ScheduleOptions = ScheduleOptions()
    smoothing: SmoothingOptions = SmoothingOptions()
    # frames too large for one detector pass are searched for new faces in a tiled scan
    # spread over this many frames (a slice of its passes each frame, see RollingScan);
    # known faces are looked for in every frame around where they were. None: the frames
    # in SCAN_SECONDS of video. A sweep of 0.3 s finds a newcomer before they have taken
    # a step, and at 1080p it costs one tile pass a frame instead of two (+24% fps)
    scan_interval: int | None = None
    # frontalness at or above which a face counts as looking at the camera (kiosk)
    attention_frontal: float = 0.6
    # run the detector on every Nth frame only; in between, each face seen at the last
    # detection moves on by its tracked velocity and the model does not run. Detection is
    # most of a frame's cost, so 2 nearly doubles what a CPU keeps up with, at the price
    # of boxes that lag on sudden moves and faces that appear or leave up to N-1 frames
    # late (docs/benchmarks.md measures both). 1: every frame; None: the most frames
    # that still detect DETECT_HZ times a second (1 up to 29 fps, 2 at 30 fps, 4 at 60)
    detect_every: int | None = None

    def __post_init__(self) -> None:
        # NaN fails every comparison, so each test is written to pass only good values
        if not 0.0 < self.fps < math.inf:
            raise UserError(f"frame rate must be a finite number above 0, got {self.fps}")
        for name in ("scan_interval", "detect_every"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise UserError(f"{name.replace('_', ' ')} must be at least 1, got {value}")


def detect_interval(fps: float, every: int | None = None) -> int:
    """Frames per detector run: `every` when given, else as many as keep DETECT_HZ."""
    if every is not None:
        if every < 1:
            raise ValueError(f"detect_every must be at least 1, got {every}")
        return every
    if not (fps and math.isfinite(fps) and fps > 0):
        return 1
    return max(1, math.floor(fps / DETECT_HZ + 1e-9))


@dataclass(frozen=True)
class FaceResult:
    track_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    confidence: float  # the detector's
    age: int | None  # shown values: None until confident
    age_std: float | None
    gender: str | None
    gender_confidence: float | None
    inferred: bool  # the model ran on this face in this frame
    quality: FaceQuality
    attentive: bool
    # the detector's six points in frame pixels (see detection.py), for head-pose
    # consumers such as the kiosk's attention estimate
    keypoints: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class TrackSummary:
    """A person who has left: the record the events file gets."""

    track_id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    frames_seen: int
    frames_inferred: int
    age: float | None
    age_std: float | None
    gender: str | None
    gender_confidence: float | None
    frames_attentive: int
    glances: int

    @property
    def duration(self) -> float:
        return self.last_time - self.first_time

    def to_event(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_time": round(self.first_time, 3),
            "last_time": round(self.last_time, 3),
            "frames_seen": self.frames_seen,
            "frames_inferred": self.frames_inferred,
            "age": None if self.age is None else round(self.age, 1),
            "age_std": self.age_std,
            "gender": self.gender,
            "gender_confidence": self.gender_confidence,
        }


@dataclass(frozen=True)
class FrameResult:
    frame_index: int
    time: float
    faces: list[FaceResult]
    finished: list[TrackSummary]  # tracks that ended at this frame
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    full_scan: bool = True  # a search of the whole frame for new faces completed with this frame


@dataclass
class RollingScan:
    """Spreads a full scan's detector passes over frames: a slice each frame, a sweep per interval.

    The full scan of a 1080p frame is nine passes (the whole frame and eight tiles). Run
    at once every few frames, it made those frames five to ten times slower than the
    others, so the stream stuttered; spread out, every frame pays the same small share
    and each part of the frame is still searched once per interval.
    """

    position: int = 0

    def next(self, count: int, interval: int) -> tuple[range, bool]:
        """The passes due this frame, and whether they complete a sweep."""
        start = self.position if self.position < count else 0  # the pass count changed with the frame size
        end = min(start + math.ceil(count / max(1, interval)), count)
        completed = end == count
        self.position = 0 if completed else end
        return range(start, end), completed


def summarize(track: Track) -> TrackSummary:
    shown = smoothing.display(track.estimate)
    estimate = smoothing.age_estimate(track.estimate)
    # the final record uses the full estimate, not the display's hysteresis-held value
    age = None if estimate is None or shown.age is None else estimate[0]
    return TrackSummary(
        track_id=track.track_id,
        first_frame=track.first_frame,
        last_frame=track.last_frame,
        first_time=track.first_time,
        last_time=track.last_time,
        frames_seen=track.frames_seen,
        frames_inferred=track.frames_inferred,
        age=age,
        age_std=shown.age_std,
        gender=shown.gender,
        gender_confidence=shown.gender_confidence,
        frames_attentive=track.frames_attentive,
        glances=track.glances,
    )


class Analyzer:
    def __init__(self, options: AnalyzerOptions, detector: FaceDetector, model: AgeGenderModel) -> None:
        self.options = options
        self.detector = detector
        self.model = model
        self.detect_every = detect_interval(options.fps, options.detect_every)
        # the tracker sees only the detection frames: its frame rate is theirs
        self.tracker = FaceTracker(options.tracker, options.fps / self.detect_every)
        self.book = TrackBook(options.tracker)
        self._sweep: RollingScan | None = None  # None until the first frame's full scan
        self._previous = np.zeros((0, 4), np.float32)  # the last frame's detections
        self._seen: list[tuple[Track, FaceQuality]] = []  # the last detection frame's faces
        self.frames = 0
        self.faces_inferred = 0

    @classmethod
    def create_from_options(cls, options: AnalyzerOptions = AnalyzerOptions()) -> "Analyzer":
        check_detector_options(options.detector)  # a bad tile size fails before the model loads
        model = AgeGenderModel.create(options.model_path, options.device)
        detector = FaceDetector.create_from_options(options.detector)
        try:
            return cls(options, detector, model)
        except BaseException:
            # closed here, not by the garbage collector at exit, where mediapipe prints a traceback
            detector.close()
            raise

    @property
    def scan_interval(self) -> int:
        """Frames a full tiled scan of a large frame is spread over."""
        if self.options.scan_interval is not None:
            return self.options.scan_interval
        # counted in detection frames, so that a sweep still spans SCAN_SECONDS
        return max(1, round(SCAN_SECONDS * self.options.fps / self.detect_every))

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    def process(self, image: np.ndarray, frame_index: int, time: float) -> FrameResult:
        if self.frames % self.detect_every:
            return self._coast(frame_index, time)
        timings: dict[str, float] = {}
        clock = _time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = _time.perf_counter()
            timings[stage] = now - clock
            clock = now

        detections, full_scan = self._detect(image)
        self._previous = detections.xyxy
        lap("detect")
        tracks = self.book.observe(self.tracker.update(detections), frame_index, time)
        lap("track")
        qualities = [scheduling.assess(image, t.box, t.keypoints, self.options.schedule) for t in tracks]
        chosen = set(self._schedule(tracks, qualities, frame_index))
        to_infer = [(t, q) for t, q in zip(tracks, qualities) if t.track_id in chosen]
        size, margin = self.model.input_size, self.model.metadata.crop_margin
        crops = [face_crop(image, t.box, t.keypoints, size, margin) for t, _ in to_infer]
        lap("crop")
        predictions = self.model.predict(np.asarray(crops) if crops else [])
        lap("infer")
        for i, (track, quality) in enumerate(to_infer):
            track.estimate = smoothing.update(
                track.estimate,
                float(predictions.age[i]),
                float(predictions.p_male[i]),
                quality.score,
                self.options.smoothing,
            )
            track.frames_inferred += 1
            track.last_inferred_frame = frame_index
            track.best_score = max(track.best_score, quality.score)
        faces = [self._face_result(t, q, t.track_id in chosen) for t, q in zip(tracks, qualities)]
        self._seen = list(zip(tracks, qualities))
        finished = [summarize(t) for t in self.book.expire(time)]
        self.frames += 1
        self.faces_inferred += len(to_infer)
        return FrameResult(frame_index, time, faces, finished, timings, full_scan)

    def _coast(self, frame_index: int, time: float) -> FrameResult:
        """A frame the detector skips: the last detection's faces, moved by their velocity."""
        started = _time.perf_counter()
        self._seen = [(t, q) for t, q in self._seen if t.track_id in self.book.active]
        faces = [
            self._face_result(t, q, False, t.predicted_box(frame_index), t.predicted_keypoints(frame_index))
            for t, q in self._seen
        ]
        finished = [summarize(t) for t in self.book.expire(time)]
        self.frames += 1
        # not a full scan: a sweep of large frames completes only on detection frames
        return FrameResult(frame_index, time, faces, finished, {"track": _time.perf_counter() - started}, False)

    def finish(self) -> list[TrackSummary]:
        """End every open track (the source ended or the user stopped)."""
        return [summarize(t) for t in self.book.close_all()]

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _detect(self, image: np.ndarray) -> tuple[sv.Detections, bool]:
        if not self.detector.needs_tiling(image.shape):
            return self.detector.detect(image), True
        if self._sweep is None:
            # the first frame is scanned whole, so that whoever is already in view is found at once
            self._sweep = RollingScan()
            return self.detector.detect(image), True
        passes = self.detector.scan_passes(image.shape)
        due, completed = self._sweep.next(len(passes), self.scan_interval)
        parts = [self.detector.detect_areas(image, [passes[i] for i in due])]
        known = self._region_boxes()
        if len(known):
            parts.append(self.detector.detect_regions(image, known))
        return merge_detections(parts, self.detector.options.merge_iou), completed

    def _region_boxes(self) -> np.ndarray:
        """Where to look between full scans: every known track, and last frame's new faces.

        ByteTrack confirms a new face only when it is detected again in the next frame,
        so a face that a full scan finds must be looked for in the next frame too, or it
        would never become a track (unless two full scans happened in a row).
        """
        tracked = np.array([t.box for t in self.book.active.values()], np.float32).reshape(-1, 4)
        previous = np.asarray(self._previous, np.float32).reshape(-1, 4)
        if len(tracked) and len(previous):
            # a detection already covered by a track's region needs no region of its own
            overlap = sv.box_iou_batch(previous, tracked).max(axis=1)
            previous = previous[overlap < NEW_FACE_IOU]
        return np.concatenate([tracked, previous])

    def _schedule(self, tracks: list[Track], qualities: list[FaceQuality], frame_index: int) -> list[int]:
        candidates = [
            Candidate(
                track_id=t.track_id,
                quality=q,
                frames_since_inference=None if t.last_inferred_frame is None else frame_index - t.last_inferred_frame,
                best_score=t.best_score,
                settled=t.estimate.shown_age is not None and t.estimate.shown_gender is not None,
            )
            for t, q in zip(tracks, qualities)
        ]
        return scheduling.select(candidates, self.options.schedule)

    def _face_result(
        self,
        track: Track,
        quality: FaceQuality,
        inferred: bool,
        box: np.ndarray | None = None,
        keypoints: np.ndarray | None = None,
    ) -> FaceResult:
        """The face as shown; `box` and `keypoints` default to the track's last detection."""
        if box is None:
            box, keypoints = track.box, track.keypoints
        attentive = quality.frontal >= self.options.attention_frontal
        if attentive:
            track.frames_attentive += 1
            if not track.was_attentive:
                track.glances += 1
        track.was_attentive = attentive
        shown = smoothing.display(track.estimate)
        return FaceResult(
            track_id=track.track_id,
            box=tuple(float(v) for v in box),  # type: ignore[arg-type]
            confidence=track.confidence,
            age=shown.age,
            age_std=shown.age_std,
            gender=shown.gender,
            gender_confidence=shown.gender_confidence,
            inferred=inferred,
            quality=quality,
            attentive=attentive,
            keypoints=None if keypoints is None else tuple((float(x), float(y)) for x, y in keypoints),
        )
