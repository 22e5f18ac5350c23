"""BlazeFace run by onnxruntime: the same networks as `realtime.detectors.mediapipe`,
and the same results, with several images in one run.

The ONNX files in models/ are MediaPipe's `.tflite` files converted by `export.blazeface`,
which records in each file how its output is decoded (`BlazeFaceSpec`). Everything
MediaPipe's face detector graph does around the network is done here the way it does
it, so that boxes, keypoints and scores match MediaPipe Tasks (tests/test_onnx_detector.py):

- ImageToTensorCalculator: the image is fitted, aspect ratio kept, into the centre of the
  network's square with black borders, by a bilinear warp (not an area resize), then
  scaled from [0, 255] to [-1, 1];
- SsdAnchorsCalculator: one anchor centre per cell and anchor of each stride's grid
  (fixed anchor size, so every anchor is 1x1);
- TensorsToDetectionsCalculator: offsets are divided by the input side and added to the
  anchor centre; scores are clipped to +-100, passed through a sigmoid and kept from
  `min_confidence` up;
- NonMaxSuppressionCalculator, WEIGHTED: each cluster of boxes overlapping the best
  remaining one by IoU > 0.3 becomes one box, the score-weighted mean of the cluster's
  boxes and keypoints, with the best box's score;
- DetectionProjection and DetectionTransformation: back to the image, the box in whole
  pixels (MediaPipe truncates, and so does this).

`detect_batch` runs many images (the tiles of a frame, the frames of many streams) in
one onnxruntime call: on a GPU that is the point of this engine. Providers are chosen as
for the age and gender model (`realtime.model.requested_providers`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from ..detection import DetectorOptions, empty_detections, verified_detector_file
from ..errors import ModelError, UserError
from ..metadata import BLAZEFACE_KEYPOINTS
from ..model import (
    PROVIDER_FOR,
    TRT_CACHE_DIR,
    first_line,
    requested_providers,
    session_options,
)

# model -> (file in models/, its sha256); written by `python -m export.blazeface`
MODEL_FILES: dict[str, tuple[str, str]] = {
    "full": ("blazeface_full_range.onnx", "77ff2fdc677a0d21396345119565ca22f22d2e4eeceeb6d67041434f9a5816f1"),
    "short": ("blazeface_short_range.onnx", "f05a65fa0f0bf92fc9e185ebef2b47d785009b375f49d28de302f7487a8304e9"),
}
SPEC_KEY = "blazeface"  # the metadata_props key holding the JSON `BlazeFaceSpec`
INPUT_NAME, BOXES_OUTPUT, SCORES_OUTPUT = "image", "regressors", "classificators"
MAX_BATCH = 64  # TensorRT's shape profile: images in one run
N_KEYPOINTS = len(BLAZEFACE_KEYPOINTS)


@dataclass(frozen=True)
class BlazeFaceSpec:
    """How a BlazeFace network's output is decoded: MediaPipe's calculator options."""

    input_size: int
    strides: tuple[int, ...]  # SsdAnchorsCalculator: one entry per layer
    anchors_per_cell: tuple[int, ...]  # anchors at each cell of each layer
    num_anchors: int
    score_clipping: float = 100.0
    min_suppression_threshold: float = 0.3

    def to_json(self) -> str:
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()})

    @classmethod
    def from_json(cls, text: str) -> BlazeFaceSpec:
        raw = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Letterbox:
    """Where an image sits in the network's square: tensor pixel = image pixel * scale + offset."""

    scale: float
    offset_x: float
    offset_y: float

    @classmethod
    def fit(cls, width: int, height: int, side: int) -> Letterbox:
        # MediaPipe pads the region of interest (the whole image) to a square centred on it
        roi = float(max(width, height))
        scale = side / roi
        return cls(scale, (roi - width) / 2 * scale, (roi - height) / 2 * scale)

    def matrix(self) -> np.ndarray:
        return np.float32([[self.scale, 0, self.offset_x], [0, self.scale, self.offset_y]])


# ------------------------------------------------------------------ pure decoding


def anchor_centres(spec: BlazeFaceSpec) -> np.ndarray:
    """(N, 2) anchor centres (x, y) relative to the input, in SsdAnchorsCalculator's order:
    layers, then rows, columns and anchors of a cell. Consecutive layers of one stride share
    a grid, their anchors side by side in each cell."""
    centres = []
    layer = 0
    while layer < len(spec.strides):
        same = layer
        while same < len(spec.strides) and spec.strides[same] == spec.strides[layer]:
            same += 1
        cells = int(np.ceil(spec.input_size / spec.strides[layer]))
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs.ravel() + 0.5) / cells, (ys.ravel() + 0.5) / cells], axis=1)
        centres.append(np.repeat(grid, sum(spec.anchors_per_cell[layer:same]), axis=0))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, spec: BlazeFaceSpec, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw outputs (N, 16), (N, 1) to the candidates scoring at least `min_score`:
    boxes (M, 4) x1 y1 x2 y2 and keypoints (M, K, 2), relative to the input square, and scores (M,)."""
    # float64: exp(100) overflows float32
    logits = np.clip(raw_scores[:, 0].astype(np.float64), -spec.score_clipping, spec.score_clipping)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes[keep].astype(np.float32) / np.float32(spec.input_size)
    centre = anchors[keep]
    cx, cy = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    points = raw[:, 4 : 4 + 2 * N_KEYPOINTS].reshape(-1, N_KEYPOINTS, 2) + centre[:, None, :]
    return boxes, points, scores[keep].astype(np.float32)


def iou_with(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with many, 0 where they do not intersect (MediaPipe's OverlapSimilarity)."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression: each cluster around the best remaining
    box (IoU > threshold) becomes the score-weighted mean of its boxes and keypoints,
    with the best box's score."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_points, out_scores = [], [], []
    while len(order):
        similar = iou_with(boxes[order[0]], boxes[order]) > threshold
        if not similar[0]:  # a box without area: MediaPipe stops here too
            break
        members, weights = order[similar], scores[order[similar]]
        total = weights.sum()
        out_boxes.append((boxes[members] * weights[:, None]).sum(0) / total)
        out_points.append((points[members] * weights[:, None, None]).sum(0) / total)
        out_scores.append(scores[order[0]])
        order = order[~similar]
    if not out_scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, N_KEYPOINTS, 2), np.float32), np.zeros((0,), np.float32)
    return np.asarray(out_boxes, np.float32), np.asarray(out_points, np.float32), np.asarray(out_scores, np.float32)


def to_image(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, box: Letterbox, side: int, width: int, height: int) -> sv.Detections:
    """Relative boxes and keypoints in the network's square to the image's pixels. The box
    corner and size are truncated to whole pixels and bounded to the image, as MediaPipe's
    DetectionTransformationCalculator does, so both engines give the same integer boxes."""
    if not len(scores):
        return empty_detections(N_KEYPOINTS)
    px = boxes * side
    x1 = (px[:, 0] - box.offset_x) / box.scale
    y1 = (px[:, 1] - box.offset_y) / box.scale
    w = (px[:, 2] - px[:, 0]) / box.scale
    h = (px[:, 3] - px[:, 1]) / box.scale
    # float32 like MediaPipe's relative coordinates, then C++'s float-to-int truncation
    rel = np.stack([x1 / width, y1 / height, w / width, h / height], axis=1).astype(np.float32)
    ox = np.clip(np.trunc(rel[:, 0] * np.float32(width)), 0, width)
    oy = np.clip(np.trunc(rel[:, 1] * np.float32(height)), 0, height)
    bw = np.clip(np.trunc(rel[:, 2] * np.float32(width)), 0, width)
    bh = np.clip(np.trunc(rel[:, 3] * np.float32(height)), 0, height)
    xyxy = np.stack([ox, oy, np.minimum(ox + bw, width), np.minimum(oy + bh, height)], axis=1).astype(np.float32)
    keypoints = ((points * side - [box.offset_x, box.offset_y]) / box.scale).astype(np.float32)
    return sv.Detections(xyxy=xyxy, confidence=scores, data={"keypoints": keypoints})


def network_input(frame_bgr: np.ndarray, box: Letterbox, side: int) -> np.ndarray:
    """The network's (side, side, 3) RGB float input in [-1, 1]: MediaPipe's bilinear warp of
    the uint8 image into the square, black outside it. The colour swap is done on the small
    warped image, which gives the same pixels as swapping the whole frame first."""
    warped = cv2.warpAffine(frame_bgr, box.matrix(), (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return warped[..., ::-1].astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


# ------------------------------------------------------------------ the engine


class OnnxBlazeFace:
    """BlazeFace by onnxruntime, one network pass per image, many images per run."""

    keypoint_layout = BLAZEFACE_KEYPOINTS

    def __init__(self, options: DetectorOptions, session: Any, spec: BlazeFaceSpec) -> None:
        self.options = options
        self.name = f"blazeface-{options.model}"  # the same network as MediaPipe's engine
        self.spec = spec
        self.input_size = spec.input_size
        self._session = session
        self._anchors = anchor_centres(spec)

    @classmethod
    def check_options(cls, options: DetectorOptions) -> int:
        """The network's input side, from a verified model file (ModelError if missing or altered)."""
        return read_spec(verified_model_path(options.model, options.model_dir)).input_size

    @classmethod
    def create_from_options(cls, options: DetectorOptions = DetectorOptions()) -> OnnxBlazeFace:
        return cls.create(options, options.device)

    @classmethod
    def create(cls, options: DetectorOptions, device: str = "auto", threads: int = 0) -> OnnxBlazeFace:
        """The engine on `device` (auto, cpu, cuda, tensorrt: as `--device` for the model)."""
        import onnxruntime as ort

        path = verified_model_path(options.model, options.model_dir)
        spec = read_spec(path)
        providers = requested_providers(device, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(path), sess_options=session_options(ort, threads), providers=with_tensorrt_options(providers, spec))
        except Exception as exc:
            raise ModelError(f"cannot load detector model {path}: {first_line(exc)}") from None
        if device in ("cuda", "tensorrt") and PROVIDER_FOR[device] not in session.get_providers():
            raise UserError(f"device {device!r} failed to initialise (onnxruntime fell back to {session.get_providers()})")
        engine = cls(options, session, spec)
        engine.detect(np.zeros((64, 64, 3), np.uint8))  # a file that loads but cannot run fails here
        return engine

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames_bgr: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Faces in each image, in its own pixels: all images in one onnxruntime run."""
        if not len(frames_bgr):
            return []
        side = self.input_size
        boxes = [Letterbox.fit(f.shape[1], f.shape[0], side) for f in frames_bgr]
        batch = np.stack([network_input(f, b, side) for f, b in zip(frames_bgr, boxes)])
        raw_boxes, raw_scores = self._session.run([BOXES_OUTPUT, SCORES_OUTPUT], {INPUT_NAME: batch})
        return [
            self._detections(raw_boxes[i], raw_scores[i], boxes[i], frame.shape[1], frame.shape[0])
            for i, frame in enumerate(frames_bgr)
        ]

    def _detections(self, raw_boxes: np.ndarray, raw_scores: np.ndarray, box: Letterbox, width: int, height: int) -> sv.Detections:
        candidates = decode(raw_boxes, raw_scores, self._anchors, self.spec, self.options.min_confidence)
        kept = weighted_nms(*candidates, self.spec.min_suppression_threshold)
        return to_image(*kept, box, self.input_size, width, height)

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> OnnxBlazeFace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verified_model_path(model: str, model_dir: Path) -> Path:
    """The ONNX detector file for `model`, refusing a missing or altered file."""
    return verified_detector_file(model, model_dir, MODEL_FILES, " (write it with `python -m export.blazeface`)")


def read_spec(path: Path) -> BlazeFaceSpec:
    """The decoding recorded in the file by export.blazeface, read without loading the weights."""
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return BlazeFaceSpec.from_json(props[SPEC_KEY])
    except Exception as exc:  # a truncated or foreign file fails in many ways
        raise ModelError(f"cannot read the BlazeFace decoding of detector model {path}: {first_line(exc)}") from None


def with_tensorrt_options(providers: list[str], spec: BlazeFaceSpec) -> list[Any]:
    """TensorRT builds an engine per input shape unless told the range of batch sizes: one
    engine for 1 to MAX_BATCH images, built once and cached (as for the age model)."""
    if PROVIDER_FOR["tensorrt"] not in providers:
        return providers
    shape = f"{spec.input_size}x{spec.input_size}x3"
    TRT_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    options = {
        "trt_profile_min_shapes": f"{INPUT_NAME}:1x{shape}",
        "trt_profile_opt_shapes": f"{INPUT_NAME}:8x{shape}",
        "trt_profile_max_shapes": f"{INPUT_NAME}:{MAX_BATCH}x{shape}",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(TRT_CACHE_DIR),
        "trt_timing_cache_enable": "True",
    }
    return [(p, options) if p == PROVIDER_FOR["tensorrt"] else p for p in providers]
