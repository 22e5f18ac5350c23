"""Where a fixed camera's picture changed: a cheap change mask, and the tiles it spares.

Most cameras do not move, so most tiles of a large frame show the same wall from one
sweep to the next, and searching them again for newcomers is wasted detector passes.
`MotionMask` compares a small grey copy of each frame (1/8 of its side) with a slowly
updated background; `TileGate` remembers, per tile, whether anything changed there since
it was last searched, and lets a still tile be searched only at a slow safety interval.
Faces already known are followed elsewhere (the region mosaic), whether they move or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .tiling import Area

# 1/8 of the side: a 1080p frame becomes 240x135, whose grey copy and difference cost
# about half a millisecond, and averaging within each 8x8 block damps sensor and codec noise
MASK_SCALE = 1 / 8
# grey levels (0-255) of the small frame that count as change: sensor noise of 2 levels
# averages to a fraction of one over a block, while a face pasted over a wall moves
# its block by tens
CHANGE_LEVEL = 12
# the background follows the picture this fast, a share per detection frame: lighting
# drifting over seconds is absorbed, a person walking in is not
BACKGROUND_RATE = 0.05
# change is grown by this many small-frame pixels (8 frame pixels each), so that a face
# at a tile's edge counts for the tiles that overlap there
DILATE_PX = 2


@dataclass(frozen=True)
class ChangeMask:
    """Which parts of a frame changed: a boolean image at `scale` of the frame's size."""

    pixels: np.ndarray  # bool, (height * scale, width * scale)
    scale: float  # mask pixels per frame pixel


def changed(mask: ChangeMask, area: Area) -> bool:
    """Whether anything changed inside an area given in frame pixels."""
    x1, y1, x2, y2 = area
    s = mask.scale
    # floor the start and ceil the end, so an area never misses the mask pixel it touches
    c1, r1 = int(np.floor(x1 * s)), int(np.floor(y1 * s))
    c2, r2 = int(np.ceil(x2 * s)), int(np.ceil(y2 * s))
    return bool(mask.pixels[r1:r2, c1:c2].any())


class MotionMask:
    """Frame differences against a slowly updated background, at 1/8 of the frame's side."""

    def __init__(self, scale: float = MASK_SCALE, level: float = CHANGE_LEVEL, rate: float = BACKGROUND_RATE) -> None:
        self.scale = scale
        self.level = level
        self.rate = rate
        self._background: np.ndarray | None = None  # float32 grey, at the mask's size
        self._kernel = np.ones((2 * DILATE_PX + 1, 2 * DILATE_PX + 1), np.uint8)

    def update(self, frame_bgr: np.ndarray) -> ChangeMask:
        """The change in this frame against the background, which then takes a share of it.

        The first frame, and a frame of a new size, change everywhere: nothing is known yet.
        """
        height, width = frame_bgr.shape[:2]
        size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        # shrink first, so the colour conversion touches 1/64 of the pixels; in two steps,
        # because INTER_AREA straight from 1080p costs 1.6 ms and these 0.2 ms: bilinear
        # to twice the size (each sample averages 2x2 pixels), then an average of 2x2 samples
        half = cv2.resize(frame_bgr, (size[0] * 2, size[1] * 2), interpolation=cv2.INTER_LINEAR)
        small = cv2.cvtColor(cv2.resize(half, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        grey = small.astype(np.float32)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey
            return ChangeMask(np.ones(grey.shape, bool), size[0] / width)
        diff = cv2.absdiff(grey, self._background)
        cv2.accumulateWeighted(grey, self._background, self.rate)
        moving = cv2.dilate((diff > self.level).astype(np.uint8), self._kernel)
        return ChangeMask(moving.astype(bool), size[0] / width)


class TileGate:
    """Which of a sweep's due tiles to search: those changed since their last search, or
    not searched for `rescan` detection frames (a face can sit still where no change
    was seen: one that came in between two frames the detector skipped, say)."""

    def __init__(self, areas: Sequence[Area], rescan: int) -> None:
        self.areas = tuple(areas)
        self.rescan = rescan
        self._dirty = np.ones(len(self.areas), bool)
        self._searched = np.zeros(len(self.areas), np.int64)  # the detection frame of each tile's last search
        self._frame = 0

    def observe(self, mask: ChangeMask) -> None:
        """One detection frame's change, remembered by every tile it touches."""
        self._frame += 1
        self._dirty |= np.fromiter((changed(mask, a) for a in self.areas), bool, len(self.areas))

    def select(self, due: Iterable[int]) -> list[int]:
        """The due tiles worth a search now; they count as searched from here."""
        chosen = [i for i in due if self._dirty[i] or self._frame - self._searched[i] >= self.rescan]
        self._dirty[chosen] = False
        self._searched[chosen] = self._frame
        return chosen
