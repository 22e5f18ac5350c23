"""Small faces in large frames, with any `FaceDetector`: tiles, regions and mosaics.

A detector network sees a small square version of its input (BlazeFace: 192x192), so a
40 px face in a 1080p frame shrinks to a few pixels and vanishes. Large frames are
therefore scanned in overlapping tiles (`scan_passes`); the analyzer spreads that scan
over several frames (`detect_areas`) and in every frame looks around the faces it
already tracks (`detect_regions`), all of them in one mosaic and one pass. A pass costs
about the same whatever its input's size, so the number of passes is the cost. Every
box and keypoint is mapped back to frame coordinates.

All of it calls only the wrapped detector's `detect`, so every detector gets it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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


class TiledDetector:
    """A `FaceDetector` that sees whole frames, tiles of large frames, or regions around known faces."""

    def __init__(self, engine: FaceDetector, options: DetectorOptions) -> None:
        self.engine = engine
        self.options = options
        self.name = engine.name
        self.input_size = engine.input_size
        self.keypoint_layout = engine.keypoint_layout

    @classmethod
    def create_from_options(cls, options: DetectorOptions = DetectorOptions()) -> "TiledDetector":
        return cls(create_engine(options), options)

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
        parts = [shifted(self.engine.detect(frame_bgr[y1:y2, x1:x2]), x1, y1) for x1, y1, x2, y2 in areas]
        return merge_detections(parts, self.options.merge_iou)

    def detect_regions(self, frame_bgr: np.ndarray, boxes: np.ndarray) -> sv.Detections:
        """Faces near the given boxes only: the cheap pass between full scans.

        All the regions go through the detector together, as one mosaic (see
        `DetectorOptions.mosaic_cell`); a face seen in two overlapping regions is merged.
        """
        height, width = frame_bgr.shape[:2]
        regions = region_boxes(boxes, width, height, self.options.region_scale)
        cell, parts = self.options.mosaic_cell, []
        for cells, side in mosaic_layouts(regions, cell, self.options.mosaic_max_side):
            found = self.engine.detect(build_mosaic(frame_bgr, cells, side))
            parts.append(from_mosaic(found, cells, cell))
        return merge_detections(parts, self.options.merge_iou)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "TiledDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shifted(found: sv.Detections, dx: int, dy: int) -> sv.Detections:
    """Detections in an area's pixels moved to the frame's, the area starting at (dx, dy)."""
    if not len(found) or not (dx or dy):
        return found
    keypoints = found.data["keypoints"] + np.float32([dx, dy])
    xyxy = found.xyxy + np.float32([dx, dy, dx, dy])
    return sv.Detections(xyxy=xyxy, confidence=found.confidence, data={**found.data, "keypoints": keypoints})


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


def region_boxes(boxes: np.ndarray, width: int, height: int, scale: float) -> list[Area]:
    """The square around each box, `scale` times its side, cut to the frame; tiny ones dropped."""
    regions = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        side = max(x2 - x1, y2 - y1) * scale
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


def mosaic_layouts(regions: Sequence[Area], cell: int, max_side: int) -> list[tuple[list[MosaicCell], int]]:
    """Regions packed into square mosaics of at most max_side x max_side cells.

    Mosaics are square because detectors letterbox their input to a square: a wide
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
    """The regions scaled into their cells, as one BGR image; empty space is mid grey."""
    mosaic = np.full((side, side, 3), 128, np.uint8)
    for c in cells:
        x1, y1, x2, y2 = c.region
        w, h = max(1, round((x2 - x1) * c.scale)), max(1, round((y2 - y1) * c.scale))
        interpolation = cv2.INTER_AREA if c.scale < 1.0 else cv2.INTER_LINEAR
        ox, oy = c.origin
        mosaic[oy : oy + h, ox : ox + w] = cv2.resize(frame_bgr[y1:y2, x1:x2], (w, h), interpolation=interpolation)
    return mosaic


def from_mosaic(found: sv.Detections, cells: Sequence[MosaicCell], cell: int) -> sv.Detections:
    """Mosaic detections mapped back to the frame; each belongs to the cell holding its centre.

    A box whose centre falls in an empty cell or outside its region's picture is dropped;
    boxes are clipped to their region, as a tile's are to the tile.
    """
    if not len(found):
        return empty_detections(found.data["keypoints"].shape[1])
    keep, cells_kept = _cells_of(found, cells, cell)
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


def _cells_of(found: sv.Detections, cells: Sequence[MosaicCell], cell: int) -> tuple[list[int], list[MosaicCell]]:
    """The detections whose centre lies on a region's picture, and the cell of each."""
    side = math.ceil(math.sqrt(len(cells)))
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
