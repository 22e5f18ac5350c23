"""Face detection: the `FaceDetector` extension point, its options and its registry.

A detector is anything with `detect(frame_bgr) -> sv.Detections` (one network pass over
the image it is given), its network's `input_size`, the `keypoint_layout` of the points
it returns and `close()`; see `FaceDetector`. Results are `supervision.Detections`:
`xyxy`, `confidence`, and `data["keypoints"]`, an (N, K, 2) array in pixels, K the
length of the layout. The one shipped implementation is MediaPipe's BlazeFace
(`realtime.detectors.mediapipe`), with six points: right eye, left eye, nose tip, mouth,
right ear, left ear ("right" is the subject's right, on the image's left). The crop
(`crops.face_crop`) levels the face by the first two; the scheduler's frontalness and
the kiosk's head pose read all six in that order.

A network sees a small square version of its input (BlazeFace: 192x192), so a 40 px
face in a 1080p frame shrinks to a few pixels and vanishes. `realtime.tiling` makes any
detector see large frames in overlapping tiles and known faces in one mosaic;
`FaceDetector.create_from_options` returns a detector wrapped that way.

A model records in its metadata the detector its training crops were cut with
(`ModelMetadata.detector`, `.keypoint_layout`); `convention_problem` says when the
running detector is another, because its boxes give the model crops unlike its training.

To add a detector: one module in `realtime/detectors/` with a class that satisfies
`FaceDetector` and has `check_options(options) -> int` (refuse options before anything
loads, return the input side) and `create_from_options(options)`; then one line in
`ENGINES` naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import supervision as sv

from .errors import ModelError, UserError
from .metadata import BLAZEFACE_KEYPOINTS, ModelMetadata
from .paths import MODELS_DIR

if TYPE_CHECKING:
    from .tiling import TiledDetector

DetectorModel = Literal["full", "short"]
N_KEYPOINTS = len(BLAZEFACE_KEYPOINTS)
log = logging.getLogger("realtime")

# `DetectorOptions.engine` -> "module:Class" of the implementation, imported on first use
# so that an engine's library loads only when it runs
ENGINES: dict[str, str] = {
    "mediapipe": "realtime.detectors.mediapipe:MediaPipeFaceDetector",
    "onnx": "realtime.detectors.onnx_blazeface:OnnxBlazeFace",
}


@dataclass(frozen=True)
class DetectorOptions:
    engine: str = "mediapipe"  # a key of ENGINES
    # where an engine that can choose runs (onnx: auto, cpu, cuda, tensorrt, as --device)
    device: str = "auto"
    model: DetectorModel = "full"
    min_confidence: float = 0.5
    # frames whose longer side exceeds 1.25x this are scanned in tiles of this size:
    # measured on a 1080p frame with 40 px faces, 640 px tiles found 6 of 6, 960 px 2 of 6
    tile_size: int = 640
    tile_overlap: float = 0.25
    # boxes from overlapping tiles (and the whole-frame pass) are merged above this IoU
    merge_iou: float = 0.4
    # around a tracked face, look in a square this many times the face's size
    region_scale: float = 2.5
    # the regions around known faces are scaled into the cells of one mosaic and looked
    # at in a single detector pass, instead of one pass per face: a pass costs about the
    # same whatever its input size, so five faces cost one pass rather than five. A cell
    # of 160 px shows a face at 64 px; in a 4x4 mosaic BlazeFace still sees it at about
    # 19 of its 192 px, above the 12 px a 40 px face has in a 640 px tile of a full scan.
    mosaic_cell: int = 160
    mosaic_max_side: int = 4  # cells per side of one mosaic; more faces take more mosaics
    # the smallest face (box side in frame pixels) to find in frames too small for
    # `tile_size` tiles: where the whole-frame pass cannot see it, those frames are also
    # swept in smaller tiles (tiling.scan_plan). 12 px finds the back row of a 480x270
    # classroom; whether a face is big enough to estimate is ScheduleOptions.min_estimate_px
    min_face_px: float = 12.0
    # the tiles of a large frame from a fixed camera that showed no change since they
    # were last searched are searched for newcomers only this often, in seconds
    # (realtime/motion.py); known faces are followed every detection frame regardless.
    # 0: every tile every sweep
    still_rescan_s: float = 2.0
    model_dir: Path = MODELS_DIR


@runtime_checkable
class FaceDetector(Protocol):
    """Faces in an image, as boxes, scores and named keypoints: the detector extension point."""

    name: str  # what model metadata records, e.g. "blazeface-full"
    input_size: int  # side in pixels of the square the network sees
    keypoint_layout: tuple[str, ...]  # names of data["keypoints"][:, k], in order

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        """Faces in the whole image, in its pixels: one pass of the network."""
        ...

    def close(self) -> None: ...

    @classmethod
    def create_from_options(cls, options: DetectorOptions = DetectorOptions()) -> "FaceDetector":
        """Each implementation builds itself from options; here, on the protocol, the factory:
        the engine `options.engine` names, wrapped to see small faces in large frames."""
        return create_detector(options)


# onnxruntime providers that mean a GPU
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_engine(device: str, available: Sequence[str]) -> str:
    """The engine `auto` means: onnx where the run's device is a GPU, MediaPipe on a CPU.

    Measured on a 2-core CPU (docs/benchmarks.md): MediaPipe's XNNPACK does a 640x480
    pass in about the CPU time of onnxruntime's and keeps to one core, so several streams
    and processes scale over cores; the onnx engine is the one that runs on CUDA and
    TensorRT, batching a frame's tiles and several streams' frames in one run.
    """
    if device == "cpu":
        return "mediapipe"
    if device in ("cuda", "tensorrt"):
        return "onnx"
    return "onnx" if any(p in available for p in GPU_PROVIDERS) else "mediapipe"


def resolve_engine(engine: str, device: str) -> str:
    """`engine` as given, or for "auto" the one `choose_engine` picks on this machine."""
    if engine != "auto":
        return engine
    import onnxruntime as ort

    return choose_engine(device, ort.get_available_providers())


def create_detector(options: DetectorOptions = DetectorOptions()) -> "TiledDetector":
    """The detector the options describe, tiled for large frames (see `realtime.tiling`)."""
    from .tiling import TiledDetector

    return TiledDetector(create_engine(options), options)


def create_engine(options: DetectorOptions) -> FaceDetector:
    """The bare engine the options name: one pass per `detect`, no tiling."""
    check_options(options)
    return engine_class(options.engine).create_from_options(options)


def engine_class(engine: str) -> type:
    if engine not in ENGINES:
        raise UserError(f"unknown detector engine {engine!r}: choose one of {', '.join(ENGINES)}")
    module, _, name = ENGINES[engine].partition(":")
    return getattr(importlib.import_module(module), name)


def check_options(options: DetectorOptions) -> int:
    """Refuse options the detector cannot work with, before anything is loaded or run.

    Returns the side of the network's input, which the engine reads from its model file.
    """
    if not 0.0 < options.min_confidence < 1.0:
        raise UserError(f"detector confidence must be between 0 and 1, got {options.min_confidence}")
    # an overlap of 1 or more steps tiles forward by a pixel at a time (see tiling.tile_grid)
    if not 0.0 <= options.tile_overlap <= 0.9:
        raise UserError(f"tile overlap must be between 0 and 0.9, got {options.tile_overlap}")
    # each halving of the smallest face quadruples a small frame's tiles (tiling.scan_plan);
    # infinity turns the small-face sweep off
    if not options.min_face_px >= 8.0:
        raise UserError(f"minimum face size must be at least 8 px, got {options.min_face_px}")
    if not 0.0 <= options.still_rescan_s < math.inf:
        raise UserError(
            f"still-tile rescan must be 0 (off) or a finite number of seconds, got {options.still_rescan_s}"
        )
    side = int(engine_class(options.engine).check_options(options))
    # the network scales every tile to its input: smaller tiles only multiply the passes
    # over the same pixels (1 px tiles meant 300,000 passes for one 640x480 frame)
    if options.tile_size < side:
        raise UserError(
            f"tile size {options.tile_size} is smaller than the {options.model}-range detector's input "
            f"({side} px): use at least {side}"
        )
    return side


def verified_detector_file(model: str, model_dir: Path, files: Mapping[str, tuple[str, str]], missing_hint: str = "") -> Path:
    """The file for `model` among an engine's `files` (model -> (name, sha256)), refusing
    an unknown model, a missing file or an altered one."""
    if model not in files:
        raise ModelError(f"unknown detector model {model!r}: choose one of {', '.join(files)}")
    name, expected = files[model]
    path = Path(model_dir) / name
    if not path.is_file():
        raise ModelError(f"detector model file is missing: {path}{missing_hint}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise ModelError(f"detector model file is corrupted (checksum mismatch): {path}")
    return path


def empty_detections(n_keypoints: int = N_KEYPOINTS) -> sv.Detections:
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        confidence=np.zeros((0,), np.float32),
        data={"keypoints": np.zeros((0, n_keypoints, 2), np.float32)},
    )


def merge_detections(parts: Sequence[sv.Detections], iou: float) -> sv.Detections:
    """One box per face from detections of overlapping passes."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_detections()
    merged = sv.Detections.merge(list(parts))
    if len(merged) > 1:
        merged = merged.with_nms(threshold=iou, class_agnostic=True)
    return merged


def convention_problem(detector: FaceDetector, metadata: ModelMetadata) -> str:
    """Why this detector's crops are not those the model was trained on; empty when they are.

    Crops are cut around the detector's box and levelled by its eyes, so another
    detector's boxes (short-range BlazeFace's are 5% smaller and 6% of a side lower than
    full-range's, IoU 0.82 on the webcam clip) show the model faces framed unlike its
    training.
    """
    if detector.name != metadata.detector:
        return (
            f"the model was trained on crops from the {metadata.detector} detector, this run detects "
            f"with {detector.name}: estimates may be less accurate"
        )
    if tuple(detector.keypoint_layout) != tuple(metadata.keypoint_layout):
        return (
            f"the model's crops used keypoints {', '.join(metadata.keypoint_layout)}; the {detector.name} "
            f"detector gives {', '.join(detector.keypoint_layout)}: estimates may be less accurate"
        )
    return ""


def warn_on_convention_mismatch(detector: FaceDetector, metadata: ModelMetadata) -> None:
    """One console line at start when the model was trained with another detector."""
    problem = convention_problem(detector, metadata)
    if problem:
        log.warning("warning: %s", problem)
