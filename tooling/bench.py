"""How fast the pipeline runs, side by side with decoding alone and a naive loop.

    python -m tooling.bench --source clip.mp4 --json bench.json

One run measures, on the same video and with the same detector and model:

- decode only: the video read frame by frame, nothing else (the ceiling);
- the pipeline: what run_camera.py does (detection with tiling and region passes,
  tracking, scheduled batched inference, smoothing) plus the overlay drawn on every
  frame, without a window;
- a naive loop: every face of every frame found by a full scan and sent to the model
  alone (batch 1), no tracking, scheduling or smoothing, the same overlay drawn;
- per-stage latency (p50, p99) of decode, detect, track, crop, infer and render;
- the model's throughput in faces/s at several batch sizes, for every execution
  provider this onnxruntime offers and for fp16 models in models/ (`*fp16*.onnx`);
- the peak resident memory of the process;
- when the video has ground truth beside it (`X.truth.json`, written by
  tooling.scenes), how well the pipeline tracked: tracks, identity switches,
  recall, so that a speed-up that costs tracking quality shows in the same report.

Timings are wall-clock. On a shared machine other processes slow some runs down, so
`--repeat N` keeps the fastest of N runs of each phase, and the report records the
load average and each phase's CPU time (all threads), which other load disturbs far
less than wall time.
"""

from __future__ import annotations

from realtime.cli import OneLineParser, positive_float, positive_int, silence_native_logs

# as in run_camera.py: C++ libraries must not print over the report
silence_native_logs()

import argparse  # noqa: E402
import os  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata as importlib_metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from time import perf_counter  # noqa: E402
from typing import Any, Callable, Iterable, Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from realtime.analyzer import STAGES, Analyzer, AnalyzerOptions, FaceResult, FrameResult, TrackSummary, detect_interval  # noqa: E402
from realtime.crops import face_crop  # noqa: E402
from realtime.detection import DetectorOptions, FaceDetector  # noqa: E402
from realtime.errors import UserError  # noqa: E402
from realtime.model import DEVICES, PROVIDER_FOR, AgeGenderModel, Predictions  # noqa: E402
from realtime.overlay import Overlay  # noqa: E402
from realtime.paths import DEFAULT_MODEL, MODELS_DIR  # noqa: E402
from realtime.readahead import ReadAhead  # noqa: E402
from realtime.scheduling import FaceQuality  # noqa: E402
from realtime.smoothing import Estimates  # noqa: E402
from realtime.sinks import ShownFrame, check_writable, write_json_atomic  # noqa: E402
from realtime.sources import Frame, FrameSource, open_source  # noqa: E402

from .scenes import iou, truth_path  # noqa: E402

BATCH_SIZES: tuple[int, ...] = (1, 8, 32, 64)
REPORT_STAGES: tuple[str, ...] = ("decode", "wait", *STAGES, "render")
JSON_VERSION = 1
# a shown face and a true face are the same face above this IoU: the truth boxes are
# where BlazeFace puts them, but a tracked box lags a moving face by a few pixels
MATCH_IOU = 0.3


# ----------------------------------------------------------------------- measurements


@dataclass
class StageClock:
    """Per-frame durations of each stage, in seconds."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        return {stage: latency_stats(values) for stage, values in self.samples.items() if values}


@dataclass
class PhaseResult:
    """One pass over the video."""

    frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # all threads of the process
    faces: int = 0  # faces shown (pipeline) or found (naive), summed over frames
    faces_inferred: int = 0
    stages: StageClock = field(default_factory=StageClock)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "seconds": round(self.seconds, 4),
            "fps": round(self.fps, 3),
            "cpu_ms_per_frame": round(1000.0 * self.cpu_seconds / self.frames, 3) if self.frames else None,
            "faces": self.faces,
            "faces_inferred": self.faces_inferred,
            **self.extra,
        }


class Stopwatch:
    """Wall and process CPU time of a block, written into a PhaseResult."""

    def __init__(self, result: PhaseResult) -> None:
        self.result = result

    def __enter__(self) -> "Stopwatch":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self._wall

    def __exit__(self, *exc: object) -> None:
        self.result.seconds = time.perf_counter() - self._wall
        self.result.cpu_seconds = time.process_time() - self._cpu


def latency_stats(values: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(values, np.float64) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": int(ms.size),
    }


def limited(frames: Iterable[Frame], max_frames: int | None) -> Iterator[Frame]:
    for i, frame in enumerate(frames):
        if max_frames is not None and i >= max_frames:
            return
        yield frame


def timed_frames(frames: Iterable[Frame], clock: StageClock, stage: str = "decode") -> Iterator[Frame]:
    """The frames, recording how long each took to arrive."""
    iterator = iter(frames)
    while True:
        start = time.perf_counter()
        frame = next(iterator, None)
        if frame is None:
            return
        clock.add(stage, time.perf_counter() - start)
        yield frame


def fastest(run: Callable[[], PhaseResult], repeat: int) -> PhaseResult:
    """The fastest of `repeat` runs: other load only ever slows a run down."""
    return min((run() for _ in range(repeat)), key=lambda r: r.seconds)


def decode_only(spec: str, max_frames: int | None) -> PhaseResult:
    result = PhaseResult()
    with open_source(spec) as source, Stopwatch(result):
        for _ in timed_frames(limited(source, max_frames), result.stages):
            result.frames += 1
    return result


ShownFaces = list[tuple[int, tuple[float, float, float, float]]]


class NaiveAnalyzer:
    """The straightforward loop that the pipeline's design is measured against.

    Every face of every frame found by a full scan and sent to the model alone (batch 1):
    no tracking, scheduling or smoothing. Shaped as the product's Analyzer (process,
    finish), so that both are measured by the same loop.
    """

    def __init__(self, detector: FaceDetector, model: AgeGenderModel) -> None:
        self.detector = detector
        self.model = model

    def process(self, image: np.ndarray, frame_index: int, time: float) -> FrameResult:
        start = perf_counter()
        found = self.detector.detect(image)
        detected = perf_counter()
        size, margin = self.model.input_size, self.model.metadata.crop_margin
        crops = [face_crop(image, box, kps, size, margin) for box, kps in zip(found.xyxy, found.data["keypoints"])]
        cropped = perf_counter()
        predictions = [self.model.predict(crop[None]) for crop in crops]
        inferred = perf_counter()
        timings = {"detect": detected - start, "track": 0.0, "crop": cropped - detected, "infer": inferred - cropped}
        faces = [naive_result(i, box, float(score), p) for i, (box, score, p) in enumerate(zip(found.xyxy, found.confidence, predictions))]
        return FrameResult(frame_index, time, faces, [], timings)

    def finish(self) -> list[TrackSummary]:
        return []  # no tracks, so no one to close


def naive_result(index: int, box: np.ndarray, confidence: float, prediction: Predictions) -> FaceResult:
    """A raw, unsmoothed model output in the shape the overlay draws."""
    p_male = float(prediction.p_male[0])
    side = float(min(box[2] - box[0], box[3] - box[1]))
    return FaceResult(
        track_id=index + 1,
        box=tuple(float(v) for v in box),  # type: ignore[arg-type]
        confidence=confidence,
        estimates=Estimates(
            age=int(round(float(prediction.age[0]))),
            age_std=float(prediction.age_std[0]),
            gender="male" if p_male >= 0.5 else "female",
            gender_confidence=max(p_male, 1.0 - p_male),
        ),
        inferred=True,
        quality=FaceQuality(size_px=side, sharpness=0.0, frontal=1.0, score=1.0, usable=True),
    )


@contextmanager
def decoded(source: FrameSource, max_frames: int | None, clock: StageClock, read_ahead: bool) -> Iterator[Iterable[Frame]]:
    """The source's frames, each timed as "decode": on a thread of their own as the
    runner reads files (read_ahead), or inline, where waiting for a frame is decoding it."""
    frames = timed_frames(limited(source, max_frames), clock)
    if not read_ahead:
        yield frames
        return
    with ReadAhead(frames) as ahead:
        yield ahead


def run_loop(
    spec: str,
    analyzer: Analyzer | NaiveAnalyzer,
    max_frames: int | None,
    read_ahead: bool,
    on_result: Callable[[FrameResult], None] = lambda processed: None,
) -> PhaseResult:
    """One timed pass: each frame through the analyzer, then the overlay drawn on it (no window, no files)."""
    result = PhaseResult()
    with open_source(spec) as source:
        overlay = Overlay.for_frame(source.info.width, source.info.height)
        with Stopwatch(result) as watch, decoded(source, max_frames, result.stages, read_ahead) as frames:
            for frame in timed_frames(frames, result.stages, "wait"):
                processed = analyzer.process(frame.image, frame.index, frame.time)
                render_start = time.perf_counter()
                # drawn as the product's sinks draw it: boxes, labels and the status line
                ShownFrame(frame, processed, overlay, (result.frames + 1) / max(watch.elapsed(), 1e-9)).annotated()
                result.stages.add("render", time.perf_counter() - render_start)
                record_frame(result, processed)
                on_result(processed)
    return result


def record_frame(result: PhaseResult, processed: FrameResult) -> None:
    for stage in STAGES:
        result.stages.add(stage, processed.timings.get(stage, 0.0))
    result.frames += 1
    result.faces += len(processed.faces)
    result.faces_inferred += sum(face.inferred for face in processed.faces)


@dataclass
class PipelineTally:
    """What the pipeline's frames add to the report beyond speed."""

    shown: dict[int, ShownFaces] = field(default_factory=dict)  # for the tracking evaluation
    people: int = 0  # tracks long enough to count as a person (events written)
    full_scans: int = 0
    batches: list[int] = field(default_factory=list)  # faces per model run

    def add(self, processed: FrameResult) -> None:
        self.shown[processed.frame_index] = [(f.track_id, f.box) for f in processed.faces]
        self.people += len(processed.finished)
        self.full_scans += processed.full_scan
        batch = sum(face.inferred for face in processed.faces)
        if batch:
            self.batches.append(batch)

    def to_json(self) -> dict[str, Any]:
        return {
            "people": self.people,
            "full_scans": self.full_scans,
            "model_runs": len(self.batches),
            "mean_batch": round(float(np.mean(self.batches)), 3) if self.batches else 0.0,
            "shown": self.shown,  # dropped from the report
        }


def run_pipeline(spec: str, analyzer: Analyzer, max_frames: int | None) -> PhaseResult:
    """The product's loop: decoded ahead on a thread, as the runner does for files, so
    "decode" is the decoder's time on its thread and "wait" how long the analysis waited."""
    tally = PipelineTally()
    result = run_loop(spec, analyzer, max_frames, read_ahead=True, on_result=tally.add)
    tally.people += len(analyzer.finish())
    result.extra = tally.to_json()
    return result


def run_naive(spec: str, detector: FaceDetector, model: AgeGenderModel, max_frames: int | None) -> PhaseResult:
    """The naive loop: decoding inline, every face of every frame to the model alone."""
    return run_loop(spec, NaiveAnalyzer(detector, model), max_frames, read_ahead=False)


# ------------------------------------------------------------------ tracking quality


def truth_for(spec: str) -> dict[str, Any] | None:
    """tooling.scenes' ground truth for the video, when it sits beside it."""
    path = truth_path(spec)
    if not Path(spec).is_file() or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def match_frame(truth: Sequence[dict[str, Any]], shown: ShownFaces) -> list[tuple[int, int]]:
    """(true id, track id) pairs of one frame, greedily by IoU."""
    pairs = sorted(
        ((iou(t["box"], box), t["id"], track) for t in truth for track, box in shown),
        reverse=True,
    )
    used_truth: set[int] = set()
    used_tracks: set[int] = set()
    matches = []
    for overlap, true_id, track in pairs:
        if overlap < MATCH_IOU:
            break
        if true_id not in used_truth and track not in used_tracks:
            used_truth.add(true_id)
            used_tracks.add(track)
            matches.append((true_id, track))
    return matches


def tracking_quality(truth: dict[str, Any], shown: dict[int, ShownFaces]) -> dict[str, Any]:
    """Tracks, identity switches and recall of the pipeline against the truth.

    An identity switch is counted, as in the MOT benchmarks, whenever a true person is
    matched to a different track than the last time they were matched.
    """
    last: dict[int, int] = {}
    tracks_of: dict[int, set[int]] = {}
    switches = matched = true_boxes = shown_boxes = 0
    for index, faces in shown.items():
        frame_truth = truth["frames"][index] if index < len(truth["frames"]) else []
        true_boxes += len(frame_truth)
        shown_boxes += len(faces)
        for true_id, track in match_frame(frame_truth, faces):
            matched += 1
            switches += true_id in last and last[true_id] != track
            last[true_id] = track
            tracks_of.setdefault(true_id, set()).add(track)
    present = {t["id"] for index in shown for t in (truth["frames"][index] if index < len(truth["frames"]) else [])}
    all_tracks = {track for faces in shown.values() for track, _ in faces}
    return {
        "true_people": len(present),
        "tracks": len(all_tracks),
        "id_switches": switches,
        "tracks_per_person": round(sum(len(v) for v in tracks_of.values()) / len(tracks_of), 3) if tracks_of else None,
        "recall": round(matched / true_boxes, 4) if true_boxes else None,
        "precision": round(matched / shown_boxes, 4) if shown_boxes else None,
    }


# -------------------------------------------------------------------- model throughput


def available_devices() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [d for d in DEVICES if d != "auto" and PROVIDER_FOR[d] in available]


def fp16_models(model_path: Path) -> list[Path]:
    """fp16 variants to measure beside the main model: `*fp16*.onnx` in models/ and beside it."""
    folders = {MODELS_DIR.resolve(), model_path.resolve().parent}
    found = {p.resolve() for folder in folders for p in folder.glob("*fp16*.onnx")}
    return sorted(p for p in found if p != model_path.resolve())


def measure_batch(model: AgeGenderModel, batch: int, seconds: float, min_runs: int = 3) -> dict[str, float]:
    """faces/s of `predict` (preprocessing, the run, postprocessing) at one batch size."""
    rng = np.random.default_rng(batch)
    size = model.input_size
    crops = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for _ in range(2):  # first runs at a new shape allocate and, on GPUs, build kernels
        model.predict(crops)
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < min_runs or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        model.predict(crops)
        durations.append(time.perf_counter() - t)
    median, best = float(np.median(durations)), float(np.min(durations))
    return {
        "batch": batch,
        "runs": len(durations),
        # the median run: robust to the odd run slowed down by other processes
        "faces_per_s": round(batch / median, 2),
        "faces_per_s_best": round(batch / best, 2),
        "batch_ms_p50": round(median * 1000.0, 3),
    }


def model_throughput(
    models: Sequence[Path], devices: Sequence[str], batches: Sequence[int], seconds: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in models:
        for device in devices:
            try:
                model = AgeGenderModel.create(path, device)
            except UserError as exc:
                rows.append({"model": str(path), "device": device, "error": str(exc)})
                continue
            provider = model.providers[0]
            for batch in batches:
                log(f"model throughput: {path.name} on {provider} at batch {batch}")
                try:
                    measured = measure_batch(model, batch, seconds)
                except Exception as exc:  # an fp16 model a provider cannot run is a result, not a crash
                    rows.append({"model": str(path), "device": device, "provider": provider, "batch": batch,
                                 "error": str(exc).strip().splitlines()[0][:200]})
                    continue
                rows.append({"model": str(path), "device": device, "provider": provider, **measured})
    return rows


# ---------------------------------------------------------------------- environment


def peak_rss_mb() -> float:
    """The process's peak resident memory so far."""
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set
        import psutil

        info = psutil.Process().memory_info()
        return round(getattr(info, "peak_wset", info.rss) / 2**20, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    import cv2

    found: dict[str, str] = {"cv2": cv2.__version__}
    for name in ("numpy", "onnxruntime", "onnxruntime-gpu", "mediapipe", "opencv-contrib-python", "supervision"):
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return found


# -------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class BenchOptions:
    source: str
    model: Path = DEFAULT_MODEL
    device: str = "auto"
    max_frames: int | None = None
    batches: tuple[int, ...] = BATCH_SIZES
    throughput_seconds: float = 2.0
    repeat: int = 1
    naive: bool = True
    # the pipeline is measured once per value (AnalyzerOptions.detect_every); the first
    # is the headline `pipeline_fps`, the others are reported beside it. None: the
    # product's automatic interval for the video, and every frame beside it
    detect_every: tuple[int, ...] | None = None


@dataclass
class Measurements:
    decoded: PhaseResult
    naive: PhaseResult | None
    variants: dict[int, PhaseResult]  # detect_every -> pipeline run, the headline one first
    throughput: list[dict[str, Any]]
    load_before: list[float] | None
    load_after: list[float] | None
    rss_videos_mb: float  # peak while running the video phases

    @property
    def pipeline(self) -> PhaseResult:
        """The headline pipeline run: the first detector interval measured."""
        return next(iter(self.variants.values()))


def check_source(spec: str) -> FrameSource:
    """A file or folder: a benchmark of a live camera would measure the camera's rate."""
    source = open_source(spec)
    if source.info.live:
        source.close()
        raise UserError(f"benchmark a video file or an image folder, not a live {source.info.kind}: {source.info.name}")
    return source


def benchmark(options: BenchOptions, log: Callable[[str], None]) -> dict[str, Any]:
    with check_source(options.source) as source:
        info = source.info
    model = AgeGenderModel.create(options.model, options.device)
    detector = FaceDetector.create_from_options(DetectorOptions())
    analyzer_options = AnalyzerOptions(model_path=options.model, device=options.device, fps=info.fps)
    variants: dict[int, PhaseResult] = {}
    load_before = load_average()
    try:
        model.predict(np.zeros((1, model.input_size, model.input_size, 3), np.uint8))  # load-time work off the clock
        log("decode only")
        decoded = fastest(lambda: decode_only(options.source, options.max_frames), options.repeat)
        intervals = options.detect_every or (detect_interval(info.fps), 1)
        for every in dict.fromkeys(intervals):
            log(f"pipeline, detector on every {every_text(every)}")
            variant = dataclasses.replace(analyzer_options, detect_every=every)
            variants[every] = fastest(
                lambda: run_pipeline(options.source, Analyzer(variant, detector, model), options.max_frames),
                options.repeat,
            )
        naive = None
        if options.naive:
            log("naive loop")
            naive = fastest(lambda: run_naive(options.source, detector, model, options.max_frames), options.repeat)
    finally:
        detector.close()
    # before the throughput runs, whose batch-64 activations grow onnxruntime's arena
    rss_videos = peak_rss_mb()
    models = [Path(options.model), *fp16_models(Path(options.model))]
    throughput = model_throughput(models, available_devices(), options.batches, options.throughput_seconds, log)
    measured = Measurements(decoded, naive, variants, throughput, load_before, load_average(), rss_videos)
    return build_report(options, info, model, measured)


def every_text(every: int) -> str:
    return {1: "frame", 2: "2nd frame", 3: "3rd frame"}.get(every, f"{every}th frame")


def variant_rows(m: Measurements, truth: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per detection interval: speed, ratios and, where the truth is known, tracking."""
    rows = []
    for every, phase in m.variants.items():
        data = phase.to_json()
        shown = data.pop("shown")
        rows.append({
            "detect_every": every,
            "fps": round(phase.fps, 3),
            "cpu_ms_per_frame": data.get("cpu_ms_per_frame"),
            "vs_naive": ratio(phase.fps, m.naive.fps if m.naive else None),
            "vs_decode": ratio(phase.fps, m.decoded.fps),
            "people": data.get("people"),
            "tracking": tracking_quality(truth, shown) if truth else None,
        })
    return rows


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def faces_per_s(throughput: Sequence[dict[str, Any]], model: Path, provider: str, batch: int) -> float | None:
    for row in throughput:
        if row["model"] == str(model) and row.get("provider") == provider and row.get("batch") == batch:
            return row.get("faces_per_s")
    return None


def build_report(options: BenchOptions, info: Any, model: AgeGenderModel, m: Measurements) -> dict[str, Any]:
    provider = model.providers[0]
    pipeline_stages = m.pipeline.stages.summary()
    stages = {stage: pipeline_stages.get(stage) for stage in REPORT_STAGES}
    # the decoder's own latency; inside the pipeline it competes with the other stages for the cores
    stages["decode"] = m.decoded.stages.summary().get("decode")
    intervals = variant_rows(m, truth_for(options.source))
    pipeline_json = m.pipeline.to_json()
    pipeline_json.pop("shown")  # scored in `intervals`, too long for the report
    batch1 = faces_per_s(m.throughput, Path(options.model), provider, 1)
    return {
        "version": JSON_VERSION,
        "decode_fps": round(m.decoded.fps, 3),
        "pipeline_fps": round(m.pipeline.fps, 3),
        "naive_fps": round(m.naive.fps, 3) if m.naive else None,
        "peak_rss_mb": m.rss_videos_mb,
        "peak_rss_mb_with_throughput": peak_rss_mb(),
        "ratios": {
            "pipeline_vs_naive": ratio(m.pipeline.fps, m.naive.fps if m.naive else None),
            "pipeline_vs_decode": ratio(m.pipeline.fps, m.decoded.fps),
            "batch32_vs_batch1": ratio(faces_per_s(m.throughput, Path(options.model), provider, 32), batch1),
        },
        "stages": stages,
        "pipeline_stages": pipeline_stages,
        "naive_stages": m.naive.stages.summary() if m.naive else None,
        "model_throughput": m.throughput,
        "decode": m.decoded.to_json(),
        "pipeline": pipeline_json,
        "naive": m.naive.to_json() if m.naive else None,
        "tracking": intervals[0]["tracking"],
        "detect_every": intervals,
        "source": {
            "path": info.name, "kind": info.kind, "width": info.width, "height": info.height,
            "fps": info.fps, "frame_count": info.frame_count, "frames_measured": m.decoded.frames,
        },
        "settings": {
            "model": str(options.model), "model_name": model.metadata.name, "device": options.device,
            "providers": model.providers, "max_frames": options.max_frames, "batches": list(options.batches),
            "repeat": options.repeat, "throughput_seconds": options.throughput_seconds,
            "detect_every": list(m.variants),
        },
        "machine": machine_info(),
        "load_average": {"before": m.load_before, "after": m.load_after},
        "versions": versions(),
        "gpu_measured": any(r.get("provider") in (PROVIDER_FOR["cuda"], PROVIDER_FOR["tensorrt"]) for r in m.throughput),
    }


# ------------------------------------------------------------------------ the report


def _fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def runs_table(report: dict[str, Any]) -> Table:
    src = report["source"]
    table = Table(title=f"{Path(src['path']).name}: {src['width']}x{src['height']}, {src['frames_measured']} frames")
    for column in ("run", "fps", "CPU ms/frame", "faces", "faces inferred"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name in ("decode", "pipeline", "naive"):
        phase = report[name]
        if phase:
            label = "decode only" if name == "decode" else name
            faces = "" if name == "decode" else str(phase["faces"])
            inferred = "" if name == "decode" else str(phase["faces_inferred"])
            table.add_row(label, _fmt(phase["fps"]), _fmt(phase["cpu_ms_per_frame"]), faces, inferred)
    ratios = report["ratios"]
    for row in report.get("detect_every", [])[1:]:
        table.add_row(f"pipeline, detector on every {every_text(row['detect_every'])}", _fmt(row["fps"]), _fmt(row["cpu_ms_per_frame"]))
    table.add_row("pipeline / naive", _fmt(ratios["pipeline_vs_naive"], 2, "x"))
    table.add_row("pipeline / decode only", _fmt(ratios["pipeline_vs_decode"], 2, "x"))
    table.add_row("peak memory (video runs)", f"{report['peak_rss_mb']:.0f} MB")
    return table


def stages_table(report: dict[str, Any]) -> Table:
    table = Table(title="per-frame latency, ms: p50 / p99 (wait: for the next decoded frame)")
    table.add_column("stage")
    table.add_column("pipeline", justify="right")
    table.add_column("naive", justify="right")
    for stage in REPORT_STAGES:
        cells = []
        for stats in (report["stages"], report["naive_stages"] or {}):
            s = stats.get(stage)
            cells.append(f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f}" if s else "-")
        table.add_row(stage, *cells)
    return table


def throughput_table(report: dict[str, Any]) -> Table:
    batches = report["settings"]["batches"]
    table = Table(title=f"model throughput, faces/s (batch 32 / batch 1: {_fmt(report['ratios']['batch32_vs_batch1'], 2, 'x')})")
    table.add_column("model")
    table.add_column("provider")
    for batch in batches:
        table.add_column(f"batch {batch}", justify="right")
    rows: dict[tuple[str, str], dict[int, str]] = {}
    for row in report["model_throughput"]:
        key = (Path(row["model"]).name, row.get("provider", row["device"]))
        cell = _fmt(row["faces_per_s"]) if "faces_per_s" in row else "error"
        rows.setdefault(key, {})[row.get("batch", 0)] = cell
    for (name, provider), cells in rows.items():
        table.add_row(name, provider.removesuffix("ExecutionProvider"), *(cells.get(b, cells.get(0, "-")) for b in batches))
    return table


def tracking_table(tracking: dict[str, Any]) -> Table:
    table = Table(title="tracking against the ground truth")
    for key in tracking:
        table.add_column(key.replace("_", " "), justify="right")
    table.add_row(*("-" if v is None else str(v) for v in tracking.values()))
    return table


def intervals_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="detector interval (--detect-every), measured side by side")
    for column in ("detect every", "fps", "/ naive", "/ decode", "people", "ID switches", "recall"):
        table.add_column(column, justify="right")
    for row in rows:
        tracking = row["tracking"] or {}
        table.add_row(
            str(row["detect_every"]), _fmt(row["fps"]), _fmt(row["vs_naive"], 2, "x"), _fmt(row["vs_decode"], 2, "x"),
            str(row["people"]), str(tracking.get("id_switches", "-")), str(tracking.get("recall", "-")),
        )
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    console.print(runs_table(report))
    console.print(stages_table(report))
    console.print(throughput_table(report))
    if report["tracking"]:
        console.print(tracking_table(report["tracking"]))
    if len(report.get("detect_every", [])) > 1:
        console.print(intervals_table(report["detect_every"]))
    if not report["gpu_measured"]:
        console.print("no GPU execution provider in this onnxruntime: CPU figures only")


# -------------------------------------------------------------------- command line


def batch_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m tooling.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, help="video file or image folder")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto",
                   help="execution provider of the pipeline and naive runs (throughput covers every available one)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"age/gender ONNX model (default: {DEFAULT_MODEL.name})")
    p.add_argument("--max-frames", type=positive_int, help="measure only the first N frames")
    p.add_argument("--repeat", type=positive_int, default=1, help="run each phase N times and keep the fastest (default 1)")
    p.add_argument("--batches", type=batch_list, default=BATCH_SIZES, help="batch sizes for model throughput (default 1,8,32,64)")
    p.add_argument("--throughput-seconds", type=positive_float, default=2.0, help="seconds spent per batch size (default 2)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop (slow on large videos)")
    p.add_argument("--detect-every", type=batch_list,
                   help="run the detector on every Nth frame; a list (1,2) measures each side by side, the first is the headline "
                   "(default: the product's automatic interval for the video, then every frame)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console, err = Console(), Console(stderr=True)
    options = BenchOptions(
        source=args.source, model=args.model, device=args.device, max_frames=args.max_frames,
        batches=args.batches, throughput_seconds=args.throughput_seconds, repeat=args.repeat, naive=not args.no_naive,
        detect_every=args.detect_every,
    )
    try:
        if args.json is not None:
            check_writable(args.json)
        report = benchmark(options, lambda text: err.print(f"[dim]{text}…[/]"))
        if args.json is not None:
            write_json_atomic(args.json, report)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print_report(report, console)
    if args.json is not None:
        err.print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
