"""Small faces in large frames, with any `FaceDetector`: tiles, regions and mosaics.

A detector network sees a small square version of its input (BlazeFace: 192x192), so a
40 px face in a 1080p frame shrinks to a few pixels and vanishes. Large frames are
therefore scanned in overlapping tiles (`scan_passes`); the analyzer spreads that scan
over several frames (`detect_areas`) and in every frame looks around the faces it
already tracks (`detect_regions`), all of them in one mosaic and one pass. A pass costs
about the same whatever its input's size, so the number of passes is the cost. Every
box and keypoint is mapped back to frame coordinates.

Small frames have small faces too: a wide-angle 480x270 camera shows seated people at
12-20 px, 5-8 px of the network's 192 after the whole-frame pass. `scan_plan` gives such
frames tiles small enough for `DetectorOptions.min_face_px` in a slow sweep beside the
whole-frame pass, and follows the faces too small for that pass in the mosaic.

All of it calls only the wrapped detector's `detect`, so every detector gets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import supervision as sv

from .detection import (
    DetectorOptions,
    FaceDetector,
    create_engine,
    empty_detections,
    merge_detections,
)

Area = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels

# the smallest face, as a fraction of the network's input side, that BlazeFace full-range
# finds reliably: on 58 UTKFace faces pasted into a classroom frame at 192 px, recall
# was 2% at 6 px, 60% at 8, 84% at 9 and 88-97% from 10 px up (its plateau)
DETECTOR_MIN_FRACTION = 10 / 192
# a known face this much above the whole-frame pass's minimum is left to that pass; a
# smaller one is followed in the region mosaic, as in a tiled scan
FOLLOW_MARGIN = 1.25


@dataclass(frozen=True)
class ScanPlan:
    """How a frame size is searched: passes each detection frame, passes swept over frames.

    Large frames (`needs_tiling`): the whole frame and its tiles in a sweep, every known
    face followed in the mosaic. Small frames: the whole frame in one pass and, where
    that pass cannot see `DetectorOptions.min_face_px`, smaller tiles in a slow sweep,
    with the faces too small for the whole-frame pass followed in the mosaic; the
    whole-frame pass then runs only while it has a known face to follow, and otherwise
    once a scan interval, for newcomers.
    """

    whole: tuple[Area, ...]  # the whole frame in one pass, outside the sweep
    sweep: tuple[Area, ...]
    tiled: bool  # the large-frame plan: the sweep is spread over `scan_interval`
    # small frames: known faces whose box side is below this are followed in regions
    # (in large frames every known face is)
    follow_below_px: float


def scan_plan(frame_shape: tuple[int, ...], options: DetectorOptions) -> ScanPlan:
    """The plan for frames of this shape: a pure function of the shape and the options."""
    height, width = frame_shape[:2]
    whole = (0, 0, width, height)
    if max(height, width) > options.tile_size * 1.25:  # `TiledDetector.needs_tiling`
        tiles = tile_grid(width, height, options.tile_size, options.tile_overlap)
        return ScanPlan((), (whole, *tiles), True, math.inf)
    # a pass shows the network its area scaled by input_size / the area's longer side
    whole_min_px = DETECTOR_MIN_FRACTION * max(height, width)
    if whole_min_px <= options.min_face_px:
        return ScanPlan((whole,), (), False, 0.0)
    side = max(1, math.floor(options.min_face_px / DETECTOR_MIN_FRACTION))
    # the network scales each tile to its input, up as well as down
    tiles = tile_grid(width, height, side, options.tile_overlap)
    return ScanPlan((whole,), tuple(tiles), False, whole_min_px * FOLLOW_MARGIN)


class TiledDetector:
    """A `FaceDetector` that sees whole frames, tiles of large frames, or regions around known faces."""

    def __init__(self, engine: FaceDetector, options: DetectorOptions, owns_engine: bool = True) -> None:
        self.engine = engine
        self.options = options
        # several streams' detectors share one engine (realtime/streams.py); its owner closes it
        self.owns_engine = owns_engine
        self.name = engine.name
        self.input_size = engine.input_size
        self.keypoint_layout = engine.keypoint_layout

    @classmethod
    def create_from_options(cls, options: DetectorOptions = DetectorOptions()) -> "TiledDetector":
        return cls(create_engine(options), options)

    def scan_plan(self, frame_shape: tuple[int, ...]) -> ScanPlan:
        return scan_plan(frame_shape, self.options)

    def needs_tiling(self, frame_shape: tuple[int, ...]) -> bool:
        return max(frame_shape[:2]) > self.options.tile_size * 1.25

    def scan_passes(self, frame_shape: tuple[int, ...]) -> list[Area]:
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
        return self.detect_areas(frame_bgr, self.scan_passes(frame_bgr.shape))

    def detect_areas(self, frame_bgr: np.ndarray, areas: Sequence[Area]) -> sv.Detections:
        """Faces in some of the scan's passes (`scan_passes`), for a scan spread over frames."""
        return self.areas_job(frame_bgr, areas).run(self.engine)

    def detect_regions(
        self, frame_bgr: np.ndarray, boxes: np.ndarray, min_side: int = 1, min_region_px: float = 0.0
    ) -> sv.Detections:
        """Faces near the given boxes only: the cheap pass between full scans (`regions_job`)."""
        return self.regions_job(frame_bgr, boxes, min_side, min_region_px).run(self.engine)

    def areas_job(self, frame_bgr: np.ndarray, areas: Sequence[Area]) -> "DetectorJob":
        """The network inputs for some of the scan's passes, and how their faces become the frame's."""
        iou = self.options.merge_iou

        def assemble(found: list[sv.Detections]) -> sv.Detections:
            return merge_detections([shifted(f, x1, y1) for f, (x1, y1, _, _) in zip(found, areas)], iou)

        return DetectorJob([frame_bgr[y1:y2, x1:x2] for x1, y1, x2, y2 in areas], assemble)

    def regions_job(
        self, frame_bgr: np.ndarray, boxes: np.ndarray, min_side: int = 1, min_region_px: float = 0.0
    ) -> "DetectorJob":
        """The regions around known boxes (at least `min_region_px` a side) scaled into the
        cells of mosaics of at least `min_side` cells a side (see `DetectorOptions.mosaic_cell`),
        one network input per mosaic; a face seen in two overlapping regions is merged."""
        height, width = frame_bgr.shape[:2]
        regions = region_boxes(boxes, width, height, self.options.region_scale, min_region_px)
        cell, iou = self.options.mosaic_cell, self.options.merge_iou
        layouts = mosaic_layouts(regions, cell, self.options.mosaic_max_side, min_side)

        def assemble(found: list[sv.Detections]) -> sv.Detections:
            parts = [from_mosaic(f, cells, cell, side // cell) for f, (cells, side) in zip(found, layouts)]
            return merge_detections(parts, iou)

        return DetectorJob([build_mosaic(frame_bgr, cells, side) for cells, side in layouts], assemble)

    def close(self) -> None:
        if self.owns_engine:
            self.engine.close()

    def __enter__(self) -> "TiledDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detect_all(engine: FaceDetector, images: Sequence[np.ndarray]) -> list[sv.Detections]:
    """Each image's faces: in one network run where the engine batches (`detect_batch`,
    the onnx engine: a frame's tiles, and on a GPU far cheaper than a run each), else one
    `detect` each (MediaPipe Tasks takes one image at a time)."""
    batch = getattr(engine, "detect_batch", None)
    if batch is not None and len(images) > 1:
        return list(batch(images))
    return [engine.detect(image) for image in images]


@dataclass
class DetectorJob:
    """Network inputs cut from one frame (tiles, a mosaic), and how their detections
    become the frame's: made first, run later, so that the inputs of many jobs (a
    frame's passes, several streams' frames) can go through the network together."""

    images: list[np.ndarray]
    assemble: Callable[[list[sv.Detections]], sv.Detections]  # one Detections per image, in order

    def run(self, engine: FaceDetector) -> sv.Detections:
        return self.assemble(detect_all(engine, self.images))


@dataclass
class DetectionPlan:
    """Every network pass one frame needs (its jobs), and how their results combine."""

    jobs: list[DetectorJob]
    combine: Callable[[list[sv.Detections]], sv.Detections]  # one Detections per job
    full_scan: bool  # a search of the whole frame for new faces completes with this frame

    @classmethod
    def merged(cls, jobs: list[DetectorJob], full_scan: bool, iou: float) -> "DetectionPlan":
        """A plan whose jobs' faces are simply merged."""
        return cls(jobs, lambda parts: merge_detections(parts, iou), full_scan)

    @property
    def images(self) -> list[np.ndarray]:
        return [image for job in self.jobs for image in job.images]

    def finish(self, found: Sequence[sv.Detections]) -> sv.Detections:
        """The frame's faces from the network's results for `images`, in order."""
        parts, start = [], 0
        for job in self.jobs:
            parts.append(job.assemble(list(found[start : start + len(job.images)])))
            start += len(job.images)
        return self.combine(parts)

    def run(self, engine: FaceDetector) -> sv.Detections:
        return self.finish(detect_all(engine, self.images))


def shifted(found: sv.Detections, dx: int, dy: int) -> sv.Detections:
    """Detections in an area's pixels moved to the frame's, the area starting at (dx, dy)."""
    if not len(found) or not (dx or dy):
        return found
    keypoints = found.data["keypoints"] + np.float32([dx, dy])
    xyxy = found.xyxy + np.float32([dx, dy, dx, dy])
    return sv.Detections(xyxy=xyxy, confidence=found.confidence, data={**found.data, "keypoints": keypoints})


def without_covered(coarse: sv.Detections, fine: sv.Detections, share: float = 0.5) -> sv.Detections:
    """The coarse detections that do not overlap a fine one by `share` of the smaller box.

    A small frame's whole-frame pass sees a 20 px face at 8 of the network's pixels and
    boxes it loosely, up to half again too large; the same face in a tile or region is
    boxed tightly. IoU between the two can fall to 0.25, below any merge threshold, so
    one face became two tracks: where both see a face, the fine pass's box is kept.
    """
    if not len(coarse) or not len(fine):
        return coarse
    a, b = coarse.xyxy[:, None, :], fine.xyxy[None, :, :]
    inter_w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    inter_h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    covered = (inter_w * inter_h / np.maximum(np.minimum(area_a, area_b), 1e-6) >= share).any(axis=1)
    return coarse[~covered]


def tile_grid(width: int, height: int, tile: int, overlap: float) -> list[Area]:
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


def region_boxes(boxes: np.ndarray, width: int, height: int, scale: float, min_px: float = 0.0) -> list[Area]:
    """The square around each box, `scale` times its side or `min_px`, cut to the frame; tiny ones dropped."""
    regions = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        side = max(max(x2 - x1, y2 - y1) * scale, min_px)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        rx1, ry1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        rx2, ry2 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
        if rx2 - rx1 >= 8 and ry2 - ry1 >= 8:
            regions.append((rx1, ry1, rx2, ry2))
    return regions


@dataclass(frozen=True)
class MosaicCell:
    """Where one frame region sits in a mosaic: mosaic = (frame - region origin) * scale + origin."""

    region: Area  # in the frame
    origin: tuple[int, int]  # top-left corner of the cell in the mosaic
    scale: float  # mosaic pixels per frame pixel


def mosaic_layouts(
    regions: Sequence[Area], cell: int, max_side: int, min_side: int = 1
) -> list[tuple[list[MosaicCell], int]]:
    """Regions packed into square mosaics of min_side to max_side cells a side.

    Mosaics are square because detectors letterbox their input to a square: a wide
    mosaic would only give each cell fewer of the model's pixels. Each region keeps its
    aspect ratio inside its cell. Returns the cells of each mosaic and its side in pixels.
    A `min_side` of 2 keeps a lone region at a quarter of the network's input: a 20 px
    face of a small frame alone in a cell filled half of BlazeFace's view, upscaled and
    blurred, and was found in 4 of 45 frames of the classroom clip; in a 2x2 mosaic, 43.
    """
    per_mosaic = max_side * max_side
    layouts = []
    for start in range(0, len(regions), per_mosaic):
        chunk = regions[start : start + per_mosaic]
        side = max(min_side, math.ceil(math.sqrt(len(chunk))))
        cells = []
        for i, (x1, y1, x2, y2) in enumerate(chunk):
            row, col = divmod(i, side)
            scale = cell / max(x2 - x1, y2 - y1)
            cells.append(MosaicCell((x1, y1, x2, y2), (col * cell, row * cell), scale))
        layouts.append((cells, side * cell))
    return layouts


def build_mosaic(frame_bgr: np.ndarray, cells: Sequence[MosaicCell], side: int) -> np.ndarray:
    """The regions scaled into their cells, as one BGR image; empty space is mid grey."""
    mosaic = np.full((side, side, 3), 128, np.uint8)
    for c in cells:
        x1, y1, x2, y2 = c.region
        w, h = max(1, round((x2 - x1) * c.scale)), max(1, round((y2 - y1) * c.scale))
        interpolation = cv2.INTER_AREA if c.scale < 1.0 else cv2.INTER_LINEAR
        ox, oy = c.origin
        mosaic[oy : oy + h, ox : ox + w] = cv2.resize(frame_bgr[y1:y2, x1:x2], (w, h), interpolation=interpolation)
    return mosaic


def from_mosaic(
    found: sv.Detections, cells: Sequence[MosaicCell], cell: int, grid: int | None = None
) -> sv.Detections:
    """Mosaic detections mapped back to the frame; each belongs to the cell holding its centre.

    `grid` is the mosaic's side in cells (default: the fewest that hold the cells).

    A box whose centre falls in an empty cell or outside its region's picture is dropped;
    boxes are clipped to their region, as a tile's are to the tile.
    """
    if not len(found):
        return empty_detections(found.data["keypoints"].shape[1])
    keep, cells_kept = _cells_of(found, cells, cell, grid or math.ceil(math.sqrt(len(cells))))
    if not keep:
        return empty_detections(found.data["keypoints"].shape[1])
    origin = np.float32([c.origin for c in cells_kept])
    offset = np.float32([c.region[:2] for c in cells_kept])
    scale = np.float32([c.scale for c in cells_kept])[:, None]
    xyxy = (found.xyxy[keep].reshape(-1, 2, 2) - origin[:, None]) / scale[:, None] + offset[:, None]
    keypoints = (found.data["keypoints"][keep] - origin[:, None]) / scale[:, None] + offset[:, None]
    xyxy = xyxy.reshape(-1, 4)
    limits = np.float32([c.region for c in cells_kept])
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(limits[:, [0]], limits[:, [2]])
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(limits[:, [1]], limits[:, [3]])
    return sv.Detections(xyxy=xyxy, confidence=found.confidence[keep], data={"keypoints": keypoints})


def _cells_of(
    found: sv.Detections, cells: Sequence[MosaicCell], cell: int, side: int
) -> tuple[list[int], list[MosaicCell]]:
    """The detections whose centre lies on a region's picture, and the cell of each."""
    centres = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2.0
    keep, kept = [], []
    for i, (cx, cy) in enumerate(centres):
        index = int(cy // cell) * side + int(cx // cell)
        if not 0 <= index < len(cells) or not (0 <= cx < side * cell and 0 <= cy < side * cell):
            continue
        c = cells[index]
        x1, y1, x2, y2 = c.region
        if cx - c.origin[0] > (x2 - x1) * c.scale or cy - c.origin[1] > (y2 - y1) * c.scale:
            continue  # on the grey padding beside a region cut by the frame's edge
        keep.append(i)
        kept.append(c)
    return keep, kept
