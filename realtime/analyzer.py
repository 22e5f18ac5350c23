"""The analyzer: frames in, typed per-face results out.

    detection -> tracking -> scheduling -> crops -> model (one batch) -> smoothing

It owns no I/O: the command line, the kiosk, the benchmark and the evaluation all feed
it frames and read its results.

Per track, the state has one owner each: `TrackBook` the lifecycle (tracking.py), the
analyzer the estimates (`Estimating`: the smoothers of smoothing.py and the scheduler's
log of inferences, made when the track appears and dropped when it ends), and the kiosk
what the viewer paid attention to (kiosk/visits.py, from each face's keypoints).
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from . import scheduling
from .crops import face_crop
from .detection import DetectorOptions, merge_detections, warn_on_convention_mismatch
from .detection import check_options as check_detector_options
from .errors import UserError
from .model import AgeGenderModel, Predictions
from .motion import MotionMask, TileGate
from .paths import DEFAULT_MODEL
from .scheduling import FaceQuality, InferenceLog, ScheduleOptions
from .smoothing import Estimates, FaceEstimates, FacePrediction, SmoothingOptions
from .tiling import DetectionPlan, ScanPlan, TiledDetector, without_covered
from .tracking import FaceTracker, Track, TrackBook, TrackerOptions

STAGES = ("detect", "track", "crop", "infer")
# a detection overlapping every tracked box less than this is a face not yet tracked
NEW_FACE_IOU = 0.3
SCAN_SECONDS = 0.3
# small frames with small faces (tiling.scan_plan) sweep their tiles this slowly: the
# whole frame is searched at least every scan interval, so the sweep only finds newcomers
# too small for it, at the cost of one extra pass every few frames (webcam: +3% CPU)
SMALL_FACE_SCAN_SECONDS = 2.0
# a small frame's faces are followed in mosaics of at least 2x2 cells (tiling.mosaic_layouts)
# and regions of at least 64 px: a 15 px box's 2.5x region, scaled 4x into its cell, was
# too blurred to find again (the classroom's right-hand man was lost for 18 frames); with
# 64 px regions the four seated faces were found in 45, 45, 45 and 43 of 45 frames
SMALL_FACE_MOSAIC = 2
SMALL_FACE_REGION_PX = 64.0
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


class EstimateFields:
    """The built-in attributes of `estimates` by name, as the outputs, overlay and kiosk read them."""

    estimates: Estimates

    @property
    def age(self) -> float | None:
        return self.estimates.age

    @property
    def age_std(self) -> float | None:
        return self.estimates.age_std

    @property
    def gender(self) -> str | None:
        return self.estimates.gender

    @property
    def gender_confidence(self) -> float | None:
        return self.estimates.gender_confidence


@dataclass(frozen=True)
class FaceResult(EstimateFields):
    track_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    confidence: float  # the detector's
    estimates: Estimates  # as shown: held still, None until confident (age in whole years)
    inferred: bool  # the model ran on this face in this frame
    quality: FaceQuality
    # the detector's six points in frame pixels (see detection.py), for head-pose
    # consumers such as the kiosk's attention estimate
    keypoints: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class TrackSummary(EstimateFields):
    """A person who has left: the record the events file gets."""

    track_id: int
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    frames_seen: int
    frames_inferred: int
    estimates: Estimates  # over the whole track: the age is the full estimate, not the shown one

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
            **self.estimates.record(),
        }


@dataclass(frozen=True)
class FrameResult:
    frame_index: int
    time: float
    faces: list[FaceResult]
    finished: list[TrackSummary]  # tracks that ended at this frame
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    full_scan: bool = True  # a search of the whole frame for new faces completed with this frame


@dataclass(frozen=True)
class PendingFrame:
    """A frame detected, tracked and scheduled (`Analyzer.begin`), waiting for the model's
    outputs for `crops`, one row per chosen face in `seen` order (`Analyzer.complete`)."""

    frame_index: int
    time: float
    crops: np.ndarray  # (N, S, S, 3) BGR uint8, N may be 0
    seen: list[tuple[Track, FaceQuality]]  # every face of the frame, with its view's quality
    chosen: frozenset[int]  # track ids the crops are of
    timings: dict[str, float]
    full_scan: bool
    coasting: bool = False  # a frame the detector skips: nothing to infer


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

    def spread(self, count: int, interval: int) -> tuple[range, bool]:
        """`count` passes spread evenly over `interval` frames: a frame gets one, several or none."""
        interval = max(1, interval)
        frame = self.position % interval  # here the position counts frames, not passes
        start, end = math.ceil(frame * count / interval), math.ceil((frame + 1) * count / interval)
        completed = frame == interval - 1
        self.position = 0 if completed else frame + 1
        return range(start, end), completed


@dataclass
class Estimating:
    """What the analyzer keeps for a track beside its lifecycle: the estimates and when it was inferred."""

    estimates: FaceEstimates
    inferences: InferenceLog = field(default_factory=InferenceLog)


def prediction_rows(predictions: Predictions) -> list[FacePrediction]:
    """The batch's outputs, one mapping of output name to value per face."""
    columns = {f.name: getattr(predictions, f.name) for f in fields(predictions)}
    return [{name: float(values[i]) for name, values in columns.items()} for i in range(len(predictions))]


def summarize(track: Track, state: Estimating) -> TrackSummary:
    return TrackSummary(
        track_id=track.track_id,
        first_frame=track.first_frame,
        last_frame=track.last_frame,
        first_time=track.first_time,
        last_time=track.last_time,
        frames_seen=track.frames_seen,
        frames_inferred=state.inferences.count,
        estimates=state.estimates.final(),
    )


def face_result(
    track: Track,
    estimates: Estimates,
    quality: FaceQuality,
    inferred: bool,
    box: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
) -> FaceResult:
    """The face as shown; `box` and `keypoints` default to the track's last detection."""
    if box is None:
        box, keypoints = track.box, track.keypoints
    return FaceResult(
        track_id=track.track_id,
        box=tuple(float(v) for v in box),  # type: ignore[arg-type]
        confidence=track.confidence,
        estimates=estimates,
        inferred=inferred,
        quality=quality,
        keypoints=None if keypoints is None else tuple((float(x), float(y)) for x, y in keypoints),
    )


class Analyzer:
    def __init__(self, options: AnalyzerOptions, detector: TiledDetector, model: AgeGenderModel) -> None:
        self.options = options
        self.detector = detector
        self.model = model
        self.detect_every = detect_interval(options.fps, options.detect_every)
        # the tracker sees only the detection frames: its frame rate is theirs
        self.tracker = FaceTracker(options.tracker, options.fps / self.detect_every)
        self.book = TrackBook(options.tracker)
        self._sweep: RollingScan | None = None  # None until the first frame's full scan
        self._plan: tuple[tuple[int, ...], ScanPlan] | None = None  # the frame shape's, once per shape
        self._since_whole = 0  # small frames: detection frames since the last whole-frame pass
        # motion gating of the sweep (DetectorOptions.still_rescan_s), made with the plan
        self._motion: MotionMask | None = None
        self._gate: TileGate | None = None
        self._previous = np.zeros((0, 4), np.float32)  # the last frame's detections
        self._planned: bool | None = None  # full_scan of the plan made and not yet detected
        self._seen: list[tuple[Track, FaceQuality]] = []  # the last detection frame's faces
        self._estimating: dict[int, Estimating] = {}  # by track id, while the track lasts
        self.frames = 0
        self.faces_inferred = 0

    @classmethod
    def create_from_options(cls, options: AnalyzerOptions = AnalyzerOptions()) -> "Analyzer":
        check_detector_options(options.detector)  # a bad tile size fails before the model loads
        model = AgeGenderModel.create(options.model_path, options.device)
        detector = TiledDetector.create_from_options(options.detector)
        warn_on_convention_mismatch(detector, model.metadata)
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
    def small_face_interval(self) -> int:
        """Detection frames a small frame's sweep of small-face tiles is spread over."""
        return max(1, round(SMALL_FACE_SCAN_SECONDS * self.options.fps / self.detect_every))

    @property
    def still_rescan_interval(self) -> int:
        """Detection frames between searches of a sweep tile that showed no change."""
        seconds = self.options.detector.still_rescan_s
        return max(1, round(seconds * self.options.fps / self.detect_every))

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    def process(self, image: np.ndarray, frame_index: int, time: float) -> FrameResult:
        """One frame, start to finish: `begin`, the model on its crops, `complete`."""
        pending = self.begin(image, frame_index, time)
        started = _time.perf_counter()
        predictions = self.model.predict(pending.crops)
        return self.complete(pending, predictions, _time.perf_counter() - started)

    def begin(self, image: np.ndarray, frame_index: int, time: float) -> "PendingFrame":
        """Detect, track and choose the faces the model sees: the frame up to the model.

        Split from `complete` so that several streams sharing one model run it once for
        all their crops (realtime/streams.py); each `begin` must be followed by its
        `complete` before the next `begin`.
        """
        started = _time.perf_counter()
        plan = self.detection_plan(image)
        detections = plan.run(self.detector.engine) if plan is not None else None
        return self.begin_detected(image, frame_index, time, detections, _time.perf_counter() - started)

    def detection_plan(self, image: np.ndarray) -> DetectionPlan | None:
        """The detector passes this frame needs; None on a frame the detector skips.

        Made before the passes run so that several streams' passes can go through the
        network together (`begin_detected` then takes the frame's faces).
        """
        if self.frames % self.detect_every:
            return None
        return self._plan_detection(image)

    def begin_detected(
        self, image: np.ndarray, frame_index: int, time: float, detections: sv.Detections | None, detect_seconds: float = 0.0
    ) -> "PendingFrame":
        """`begin` with the faces of `detection_plan`'s passes (None: a frame the detector skips)."""
        if detections is None:
            return PendingFrame(frame_index, time, np.zeros((0, 1, 1, 3), np.uint8), [], frozenset(), {}, False, coasting=True)
        assert self._planned is not None
        full_scan, self._planned = self._planned, None
        self._previous = detections.xyxy
        timings: dict[str, float] = {"detect": detect_seconds}
        clock = _time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = _time.perf_counter()
            timings[stage] = now - clock
            clock = now

        tracks = self.book.observe(self.tracker.update(detections), frame_index, time)
        for track in tracks:
            if track.track_id not in self._estimating:
                self._estimating[track.track_id] = Estimating(FaceEstimates(self.options.smoothing))
        lap("track")
        qualities = [scheduling.assess(image, t.box, t.keypoints, self.options.schedule) for t in tracks]
        chosen = frozenset(self._schedule(tracks, qualities, frame_index))
        size, margin = self.model.input_size, self.model.metadata.crop_margin
        crops = [face_crop(image, t.box, t.keypoints, size, margin) for t in tracks if t.track_id in chosen]
        lap("crop")
        batch = np.asarray(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        return PendingFrame(frame_index, time, batch, list(zip(tracks, qualities)), chosen, timings, full_scan)

    def complete(self, pending: "PendingFrame", predictions: Predictions, infer_seconds: float = 0.0) -> FrameResult:
        """The model's outputs for `pending.crops` into the estimates, and the frame's result."""
        if pending.coasting:
            return self._coast(pending.frame_index, pending.time)
        to_infer = [(t, q) for t, q in pending.seen if t.track_id in pending.chosen]
        self._record(to_infer, predictions, pending.frame_index)
        faces = [face_result(t, self._shown(t), q, t.track_id in pending.chosen) for t, q in pending.seen]
        self._seen = list(pending.seen)
        finished = self._end(self.book.expire(pending.time))
        self.frames += 1
        self.faces_inferred += len(to_infer)
        timings = {**pending.timings, "infer": infer_seconds}
        return FrameResult(pending.frame_index, pending.time, faces, finished, timings, pending.full_scan)

    def _coast(self, frame_index: int, time: float) -> FrameResult:
        """A frame the detector skips: the last detection's faces, moved by their velocity."""
        started = _time.perf_counter()
        self._seen = [(t, q) for t, q in self._seen if t.track_id in self.book.active]
        faces = [
            face_result(t, self._shown(t), q, False, t.predicted_box(frame_index), t.predicted_keypoints(frame_index))
            for t, q in self._seen
        ]
        finished = self._end(self.book.expire(time))
        self.frames += 1
        # not a full scan: a sweep of large frames completes only on detection frames
        return FrameResult(frame_index, time, faces, finished, {"track": _time.perf_counter() - started}, False)

    def finish(self) -> list[TrackSummary]:
        """End every open track (the source ended or the user stopped)."""
        return self._end(self.book.close_all())

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _plan_detection(self, image: np.ndarray) -> DetectionPlan:
        plan = self._scan_plan(image.shape)
        iou = self.detector.options.merge_iou
        if not plan.sweep:
            detection = DetectionPlan.merged([self.detector.areas_job(image, plan.whole)], True, iou)
        else:
            first = self._sweep is None
            if first:
                self._sweep = RollingScan()
            if self._gate is not None:
                assert self._motion is not None
                self._gate.observe(self._motion.update(image))
            planner = self._plan_tiled if plan.tiled else self._plan_small_faces
            detection = planner(image, plan, first)
        self._planned = detection.full_scan
        return detection

    def _plan_tiled(self, image: np.ndarray, plan: ScanPlan, first: bool) -> DetectionPlan:
        """A large frame: a slice of the tiled scan, and the known faces in their regions."""
        iou = self.detector.options.merge_iou
        if first:  # whoever is already in view is found at once
            self._gated(range(len(plan.sweep)))
            return DetectionPlan.merged([self.detector.areas_job(image, plan.sweep)], True, iou)
        assert self._sweep is not None
        due, completed = self._sweep.next(len(plan.sweep), self.scan_interval)
        jobs = [self.detector.areas_job(image, [plan.sweep[i] for i in self._gated(due)])]
        known = self._region_boxes()
        if len(known):
            jobs.append(self.detector.regions_job(image, known))
        return DetectionPlan.merged(jobs, completed, iou)

    def _plan_small_faces(self, image: np.ndarray, plan: ScanPlan, first: bool) -> DetectionPlan:
        """A small frame: a slice of the small-face tiles, the small known faces in their
        regions, and the whole frame when it has a known face to follow or newcomers are due."""
        assert self._sweep is not None
        if first:
            due, completed = range(len(plan.sweep)), True
        else:
            due, completed = self._sweep.spread(len(plan.sweep), self.small_face_interval)
        iou = self.detector.options.merge_iou
        fine = [self.detector.areas_job(image, [plan.sweep[i] for i in due])]
        known = self._region_boxes()
        small = np.minimum(known[:, 2] - known[:, 0], known[:, 3] - known[:, 1]) < plan.follow_below_px
        if small.any():
            fine.append(self.detector.regions_job(image, known[small], SMALL_FACE_MOSAIC, SMALL_FACE_REGION_PX))
        self._since_whole += 1
        # while every known face is followed in the mosaic, the whole frame is only
        # searched for newcomers, as often as a large frame's sweep searches it
        if small.any() and small.all() and self._since_whole < self.scan_interval:
            return DetectionPlan.merged(fine, completed, iou)
        self._since_whole = 0

        def combine(parts: list[sv.Detections]) -> sv.Detections:
            tight, coarse = merge_detections(parts[:-1], iou), parts[-1]
            return merge_detections([without_covered(coarse, tight), tight], iou)

        return DetectionPlan([*fine, self.detector.areas_job(image, plan.whole)], combine, completed)

    def _scan_plan(self, shape: tuple[int, ...]) -> ScanPlan:
        """The plan for this frame size, made once per source (again only if the size changes)."""
        if self._plan is None or self._plan[0] != shape[:2]:
            self._plan = (shape[:2], self.detector.scan_plan(shape))
            # only large frames are gated: a small frame's sweep already takes
            # SMALL_FACE_SCAN_SECONDS, no faster than the safety search, so gating it
            # saved no pass and its mask cost 13% of the webcam's fps
            gating = self._plan[1].tiled and self.options.detector.still_rescan_s > 0
            self._motion = MotionMask() if gating else None
            self._gate = TileGate(self._plan[1].sweep, self.still_rescan_interval) if gating else None
        return self._plan[1]

    def _gated(self, due: range) -> list[int]:
        """The sweep passes due now that motion gating leaves to search: all of them when
        gating is off, else those whose tile changed since its last search or is due a
        safety search (motion.TileGate); they count as searched from here."""
        return list(due) if self._gate is None else self._gate.select(due)

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
        candidates = []
        for t, q in zip(tracks, qualities):
            state = self._estimating[t.track_id]
            candidates.append(state.inferences.candidate(t.track_id, q, frame_index, state.estimates.settled))
        return scheduling.select(candidates, self.options.schedule)

    def _record(self, inferred: list[tuple[Track, FaceQuality]], predictions: Predictions, frame_index: int) -> None:
        """The model's outputs into the estimates of the tracks it ran on, each weighted by its view."""
        for (track, quality), prediction in zip(inferred, prediction_rows(predictions)):
            state = self._estimating[track.track_id]
            state.estimates.update(prediction, quality.score)
            state.inferences = state.inferences.after(frame_index, quality)

    def _shown(self, track: Track) -> Estimates:
        return self._estimating[track.track_id].estimates.shown()

    def _end(self, ended: list[Track]) -> list[TrackSummary]:
        """The records of the tracks that ended; the estimates of every track gone are dropped."""
        summaries = [summarize(t, self._estimating[t.track_id]) for t in ended]
        self._estimating = {i: s for i, s in self._estimating.items() if i in self.book.active}
        return summaries
