"""Face detection with the MediaPipe Tasks FaceDetector (BlazeFace).

Two models ship in models/: `full` (full-range, sparse; small and distant faces) and
`short` (short-range; faces within about 2 m). Measured on the shared clips, full-range
found 2.9 of the 3 walkers per frame and short-range 0.5, and both found the webcam face
in every frame, so `full` is the default.

BlazeFace sees a 192x192 (full) or 128x128 (short) version of its input, so a 40 px
face in a 1080p frame shrinks to a few pixels and vanishes. Large frames are therefore
scanned in overlapping tiles (`scan_passes`); the analyzer spreads that scan over
several frames (`detect_areas`) and in every frame looks around the faces it already
tracks (`detect_regions`), all of them in one mosaic and one pass. A pass costs about
the same whatever its input's size (BlazeFace always sees 192x192), so the number of
passes is the cost. Every box and keypoint is mapped back to frame coordinates.

Results are `supervision.Detections`: `xyxy`, `confidence`, and `data["keypoints"]`
with the six BlazeFace points per face in pixels (right eye, left eye, nose tip, mouth,
right ear, left ear; "right" is the subject's right, on the image's left).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import cv2
import numpy as np
import supervision as sv

from .errors import ModelError, UserError
from .paths import MODELS_DIR

DetectorModel = Literal["full", "short"]

MODEL_FILES: dict[str, tuple[str, str]] = {
    "full": (
        "face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    "short": (
        "face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
}
N_KEYPOINTS = 6


@dataclass(frozen=True)
class DetectorOptions:
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
    model_dir: Path = MODELS_DIR


def empty_detections() -> sv.Detections:
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        confidence=np.zeros((0,), np.float32),
        data={"keypoints": np.zeros((0, N_KEYPOINTS, 2), np.float32)},
    )


def verified_model_path(model: str, model_dir: Path) -> Path:
    """The detector file for `model`, refusing a missing or altered file."""
    if model not in MODEL_FILES:
        raise ModelError(f"unknown detector model {model!r}: choose one of {', '.join(MODEL_FILES)}")
    name, expected = MODEL_FILES[model]
    path = Path(model_dir) / name
    if not path.is_file():
        raise ModelError(f"detector model file is missing: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ModelError(f"detector model file is corrupted (checksum mismatch): {path}")
    return path


def model_input_size(path: Path) -> int:
    """The side of the square image the detector network sees, read from its input tensor.

    BlazeFace scales whatever it is given to this square, so a tile smaller than it only
    multiplies the passes over the same pixels: 1 px tiles meant 300,000 passes for one
    640x480 frame, a run that never ended.
    """
    import_mediapipe()
    # mediapipe's own generated reader for the TFLite flatbuffer schema
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    try:
        graph = tflite.Model.GetRootAsModel(path.read_bytes(), 0).Subgraphs(0)
        shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()  # (1, height, width, 3)
        return int(max(shape[1:3]))
    except Exception as exc:  # a truncated or foreign file: flatbuffers fails in many ways
        raise ModelError(f"cannot read the input size of detector model {path}: {exc}") from None


def check_options(options: DetectorOptions) -> Path:
    """Refuse options the detector cannot work with, before anything is loaded or run.

    Returns the verified model file.
    """
    if not 0.0 < options.min_confidence < 1.0:
        raise UserError(f"detector confidence must be between 0 and 1, got {options.min_confidence}")
    # an overlap of 1 or more steps tiles forward by a pixel at a time (see tile_grid)
    if not 0.0 <= options.tile_overlap <= 0.9:
        raise UserError(f"tile overlap must be between 0 and 0.9, got {options.tile_overlap}")
    path = verified_model_path(options.model, options.model_dir)
    side = model_input_size(path)
    if options.tile_size < side:
        raise UserError(
            f"tile size {options.tile_size} is smaller than the {options.model}-range detector's input "
            f"({side} px): use at least {side}"
        )
    return path


class _NoTensorFlow:
    """Import hook that hides TensorFlow while mediapipe imports.

    mediapipe.tasks tries `from tensorflow.tools.docs import doc_controls` for its API
    docs only, which imports all of TensorFlow (6-9 s, a GB of memory) whenever the
    training extra is installed. It falls back cleanly on ModuleNotFoundError.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def import_mediapipe() -> object:
    if "mediapipe.tasks.python.vision" in sys.modules or "tensorflow" in sys.modules:
        import mediapipe.tasks.python.vision

        return sys.modules["mediapipe"]
    blocker = _NoTensorFlow()
    sys.meta_path.insert(0, blocker)
    try:
        import mediapipe.tasks.python.vision  # noqa: F401
    finally:
        sys.meta_path.remove(blocker)
    return sys.modules["mediapipe"]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Mutes what C++ code writes to file descriptor 2 (not Python's sys.stderr object).

    MediaPipe's LiteRT runtime logs a dozen INFO/WARNING lines at start-up, on the first
    frame and at shutdown, with no switch to turn them off; users should see our one-line
    messages instead. Used only around those calls, not per frame.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tile_grid(width: int, height: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Overlapping square-ish tiles (x1, y1, x2, y2) covering the frame.

    The overlap is what lets a face cut by one tile's edge appear whole in its
    neighbour; the merge step then keeps one box per face.
    """

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        step = max(1, int(tile * (1.0 - overlap)))
        n = int(np.ceil((length - tile) / step)) + 1
        # spread the tiles evenly so the last one ends exactly at the border
        return [round(i * (length - tile) / (n - 1)) for i in range(n)]

    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in starts(height) for x in starts(width)]


@dataclass(frozen=True)
class MosaicCell:
    """Where one frame region sits in a mosaic: mosaic = (frame - region origin) * scale + origin."""

    region: tuple[int, int, int, int]  # x1, y1, x2, y2 in the frame
    origin: tuple[int, int]  # top-left corner of the cell in the mosaic
    scale: float  # mosaic pixels per frame pixel


def mosaic_layouts(regions: Sequence[tuple[int, int, int, int]], cell: int, max_side: int) -> list[tuple[list[MosaicCell], int]]:
    """Regions packed into square mosaics of at most max_side x max_side cells.

    Mosaics are square because BlazeFace letterboxes its input to a square: a wide
    mosaic would only give each cell fewer of the model's pixels. Each region keeps its
    aspect ratio inside its cell. Returns the cells of each mosaic and its side in pixels.
    """
    per_mosaic = max_side * max_side
    layouts = []
    for start in range(0, len(regions), per_mosaic):
        chunk = regions[start : start + per_mosaic]
        side = math.ceil(math.sqrt(len(chunk)))
        cells = []
        for i, (x1, y1, x2, y2) in enumerate(chunk):
            row, col = divmod(i, side)
            scale = cell / max(x2 - x1, y2 - y1)
            cells.append(MosaicCell((x1, y1, x2, y2), (col * cell, row * cell), scale))
        layouts.append((cells, side * cell))
    return layouts


def build_mosaic(frame_bgr: np.ndarray, cells: Sequence[MosaicCell], side: int) -> np.ndarray:
    """The regions scaled into their cells, as one RGB image; empty space is mid grey."""
    mosaic = np.full((side, side, 3), 128, np.uint8)
    for c in cells:
        x1, y1, x2, y2 = c.region
        w, h = max(1, round((x2 - x1) * c.scale)), max(1, round((y2 - y1) * c.scale))
        interpolation = cv2.INTER_AREA if c.scale < 1.0 else cv2.INTER_LINEAR
        ox, oy = c.origin
        mosaic[oy : oy + h, ox : ox + w] = cv2.resize(frame_bgr[y1:y2, x1:x2], (w, h), interpolation=interpolation)
    return cv2.cvtColor(mosaic, cv2.COLOR_BGR2RGB)


def from_mosaic(found: sv.Detections, cells: Sequence[MosaicCell], cell: int) -> sv.Detections:
    """Mosaic detections mapped back to the frame; each belongs to the cell holding its centre.

    A box whose centre falls in an empty cell or outside its region's picture is dropped;
    boxes are clipped to their region, as a tile's are to the tile.
    """
    if not len(found):
        return empty_detections()
    side = math.ceil(math.sqrt(len(cells)))
    centres = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2.0
    keep, origins, offsets, scales, bounds = [], [], [], [], []
    for i, (cx, cy) in enumerate(centres):
        index = int(cy // cell) * side + int(cx // cell)
        if not 0 <= index < len(cells) or not (0 <= cx < side * cell and 0 <= cy < side * cell):
            continue
        c = cells[index]
        x1, y1, x2, y2 = c.region
        if cx - c.origin[0] > (x2 - x1) * c.scale or cy - c.origin[1] > (y2 - y1) * c.scale:
            continue  # on the grey padding beside a region cut by the frame's edge
        keep.append(i)
        origins.append(c.origin)
        offsets.append((x1, y1))
        scales.append(c.scale)
        bounds.append(c.region)
    if not keep:
        return empty_detections()
    origin, offset = np.float32(origins), np.float32(offsets)
    scale = np.float32(scales)[:, None]
    xyxy = (found.xyxy[keep].reshape(-1, 2, 2) - origin[:, None]) / scale[:, None] + offset[:, None]
    keypoints = (found.data["keypoints"][keep] - origin[:, None]) / scale[:, None] + offset[:, None]
    xyxy = xyxy.reshape(-1, 4)
    limits = np.float32(bounds)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(limits[:, [0]], limits[:, [2]])
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(limits[:, [1]], limits[:, [3]])
    return sv.Detections(xyxy=xyxy, confidence=found.confidence[keep], data={"keypoints": keypoints})


def merge_detections(parts: Sequence[sv.Detections], iou: float) -> sv.Detections:
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_detections()
    merged = sv.Detections.merge(list(parts))
    if len(merged) > 1:
        merged = merged.with_nms(threshold=iou, class_agnostic=True)
    return merged


class FaceDetector:
    """BlazeFace on whole frames, tiles of large frames, or regions around known faces."""

    def __init__(self, options: DetectorOptions, detector: object) -> None:
        self.options = options
        self._detector = detector

    @classmethod
    def create_from_options(cls, options: DetectorOptions = DetectorOptions()) -> "FaceDetector":
        path = check_options(options)
        from mediapipe.tasks.python import BaseOptions, vision

        task_options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=options.min_confidence,
        )
        try:
            with native_stderr_silenced():
                detector = vision.FaceDetector.create_from_options(task_options)
                instance = cls(options, detector)
                # the first run logs its own warnings; take it here, on a blank frame
                instance._detect_rgb(np.zeros((64, 64, 3), np.uint8), 0, 0)
        except Exception as exc:  # mediapipe raises RuntimeError/ValueError with long texts
            raise ModelError(f"cannot load detector model {path}: {str(exc).splitlines()[0]}") from None
        return instance

    def needs_tiling(self, frame_shape: tuple[int, ...]) -> bool:
        return max(frame_shape[:2]) > self.options.tile_size * 1.25

    def scan_passes(self, frame_shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
        """The detector passes of a full scan, as frame areas: the whole frame, then the tiles.

        The whole-frame pass still catches faces too large for one tile.
        """
        height, width = frame_shape[:2]
        passes = [(0, 0, width, height)]
        if self.needs_tiling(frame_shape):
            passes += tile_grid(width, height, self.options.tile_size, self.options.tile_overlap)
        return passes

    def detect(self, frame_bgr: np.ndarray) -> sv.Detections:
        """All faces in the frame: one pass for small frames, whole frame plus tiles for large."""
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        parts = [self._detect_rgb(rgb[y1:y2, x1:x2], x1, y1) for x1, y1, x2, y2 in self.scan_passes(frame_bgr.shape)]
        return merge_detections(parts, self.options.merge_iou)

    def detect_areas(self, frame_bgr: np.ndarray, areas: Sequence[tuple[int, int, int, int]]) -> sv.Detections:
        """Faces in some of the scan's passes (`scan_passes`), for a scan spread over frames."""
        parts = [
            self._detect_rgb(cv2.cvtColor(frame_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2RGB), x1, y1)
            for x1, y1, x2, y2 in areas
        ]
        return merge_detections(parts, self.options.merge_iou)

    def detect_regions(self, frame_bgr: np.ndarray, boxes: np.ndarray) -> sv.Detections:
        """Faces near the given boxes only: the cheap pass between full scans.

        All the regions go through the detector together, as one mosaic (see
        `DetectorOptions.mosaic_cell`); a face seen in two overlapping regions is merged.
        """
        height, width = frame_bgr.shape[:2]
        regions = self.region_boxes(boxes, width, height)
        cell, parts = self.options.mosaic_cell, []
        for cells, side in mosaic_layouts(regions, cell, self.options.mosaic_max_side):
            found = self._detect_rgb(build_mosaic(frame_bgr, cells, side), 0, 0)
            parts.append(from_mosaic(found, cells, cell))
        return merge_detections(parts, self.options.merge_iou)

    def region_boxes(self, boxes: np.ndarray, width: int, height: int) -> list[tuple[int, int, int, int]]:
        regions = []
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            side = max(x2 - x1, y2 - y1) * self.options.region_scale
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            rx1, ry1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            rx2, ry2 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
            if rx2 - rx1 >= 8 and ry2 - ry1 >= 8:
                regions.append((rx1, ry1, rx2, ry2))
        return regions

    def _detect_rgb(self, rgb: np.ndarray, offset_x: int, offset_y: int) -> sv.Detections:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        result = self._detector.detect(image)  # type: ignore[attr-defined]
        if not result.detections:
            return empty_detections()
        h, w = rgb.shape[:2]
        boxes, scores, points = [], [], []
        for det in result.detections:
            bb = det.bounding_box
            boxes.append([bb.origin_x, bb.origin_y, bb.origin_x + bb.width, bb.origin_y + bb.height])
            scores.append(det.categories[0].score if det.categories else 0.0)
            kps = [(kp.x * w, kp.y * h) for kp in (det.keypoints or [])][:N_KEYPOINTS]
            kps += [(np.nan, np.nan)] * (N_KEYPOINTS - len(kps))
            points.append(kps)
        xyxy = np.asarray(boxes, np.float32) + np.float32([offset_x, offset_y, offset_x, offset_y])
        keypoints = np.asarray(points, np.float32) + np.float32([offset_x, offset_y])
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(offset_x, offset_x + w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(offset_y, offset_y + h)
        return sv.Detections(
            xyxy=xyxy, confidence=np.asarray(scores, np.float32), data={"keypoints": keypoints}
        )

    def close(self) -> None:
        if self._detector is not None:
            with native_stderr_silenced():
                self._detector.close()  # type: ignore[attr-defined]
            self._detector = None

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
