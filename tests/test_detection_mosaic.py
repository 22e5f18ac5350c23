"""Large frames: the scan for new faces spread over frames, and all known faces in one mosaic."""

import numpy as np
import supervision as sv

from realtime.analyzer import RollingScan
from realtime.tiling import MosaicCell, from_mosaic, mosaic_layouts
from tests.test_detection import small_faces_frame


def test_mosaics_are_square_and_hold_at_most_the_cap():
    regions = [(0, 0, 100, 100)] * 5
    (cells, side), = mosaic_layouts(regions, 160, 4)
    assert side == 3 * 160 and len(cells) == 5
    assert cells[4].origin == (160, 160)
    layouts = mosaic_layouts([(0, 0, 100, 100)] * 20, 160, 4)
    assert [len(c) for c, _ in layouts] == [16, 4]
    assert [s for _, s in layouts] == [4 * 160, 2 * 160]


def test_mosaic_boxes_map_back_to_their_region():
    cells = [MosaicCell((1000, 500, 1200, 700), (0, 0), 0.8), MosaicCell((0, 0, 100, 50), (160, 0), 1.6)]
    found = sv.Detections(
        xyxy=np.float32([[40, 40, 120, 120], [170, 10, 250, 70], [170, 100, 200, 150]]),
        confidence=np.float32([0.9, 0.8, 0.7]),
        data={"keypoints": np.zeros((3, 6, 2), np.float32) + np.float32([60, 60])},
    )
    mapped = from_mosaic(found, cells, 160)
    # the third box lies on the grey padding below the second (wide) region: dropped
    assert len(mapped) == 2
    np.testing.assert_allclose(mapped.xyxy[0], [1050, 550, 1150, 650])
    np.testing.assert_allclose(mapped.data["keypoints"][0, 0], [1075, 575])
    # clipped to its region, as tile boxes are to their tile
    np.testing.assert_allclose(mapped.xyxy[1], [6.25, 6.25, 56.25, 43.75])


def test_region_pass_boxes_agree_with_the_full_scan(detector):
    frame = small_faces_frame()
    full = detector.detect(frame)
    regions = detector.detect_regions(frame, full.xyxy)
    assert len(regions) == len(full)
    # 35-45 px faces: a few pixels of disagreement is a large IoU change. One pass per
    # region (before the mosaic) agreed with the scan at 0.40-0.84, 0.68 on average.
    best = sv.box_iou_batch(full.xyxy, regions.xyxy).max(axis=1)
    assert best.min() >= 0.4 and best.mean() >= 0.65, best


def test_rolling_scan_covers_every_pass_once_per_interval():
    sweep = RollingScan()
    slices = [sweep.next(9, 5) for _ in range(10)]
    assert [list(due) for due, _ in slices[:5]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    assert [done for _, done in slices] == [False, False, False, False, True] * 2
    assert list(RollingScan(position=7).next(3, 5)[0]) == [0]  # fewer passes after a size change


def test_scan_passes_are_the_whole_frame_then_the_tiles(detector):
    passes = detector.scan_passes((1080, 1920, 3))
    assert passes[0] == (0, 0, 1920, 1080) and len(passes) == 9
    assert detector.scan_passes((480, 640, 3)) == [(0, 0, 640, 480)]
