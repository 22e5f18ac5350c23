"""The degradations of training.degrade on a real face, with answers known in advance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realtime.errors import UserError
from tests.conftest import read_face
from training.degrade import (
    DEGRADATIONS,
    brightness,
    downscale,
    jitter_box,
    jpeg,
    motion_blur,
    motion_blur_kernel,
    parse_degradations,
    record_rng,
    rotate,
)


@pytest.fixture(scope="module")
def face(labels) -> np.ndarray:
    row = next(r for r in labels if r["source"] == "utkface")
    image = read_face(row)
    assert image.dtype == np.uint8 and image.ndim == 3 and min(image.shape[:2]) >= 100
    return image


def high_frequency(image: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image: the fine detail a small face loses."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())


def test_downscale_keeps_the_shape_and_loses_detail(face):
    before = face.copy()
    small = downscale(face, 24)
    assert small.shape == face.shape and small.dtype == np.uint8
    assert np.array_equal(face, before)  # the input is left alone
    assert high_frequency(small) < 0.5 * high_frequency(face)
    # the smaller the face, the less detail; the colours stay where they were
    assert high_frequency(small) < high_frequency(downscale(face, 48)) < high_frequency(face)
    assert abs(float(small.mean()) - float(face.mean())) < 2.0
    # a face box half the shorter side wide: the image is shrunk half as much as without one
    assert face.shape[0] == face.shape[1]
    assert np.array_equal(downscale(face, 24, face_width=face.shape[1] / 2), downscale(face, 48))
    # never enlarges: a face already smaller than face_px is unchanged
    assert np.array_equal(downscale(face, 10 * max(face.shape)), face)


def test_jpeg_differs_but_keeps_the_shape(face):
    out = jpeg(face, 30)
    assert out.shape == face.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - face.astype(int))
    assert 0.5 < diff.mean() < 15  # visibly changed, still the same picture
    assert np.abs(jpeg(face, 95).astype(int) - face.astype(int)).mean() < diff.mean()


def test_motion_blur_smears_along_its_direction(face):
    kernel = motion_blur_kernel(9, 0)
    assert kernel.shape == (9, 9) and kernel.sum() == pytest.approx(1.0)
    assert np.count_nonzero(kernel[4]) == 9 and np.count_nonzero(kernel) == 9  # one horizontal line
    assert np.count_nonzero(motion_blur_kernel(9, 90)[:, 4]) == 9
    blurred = motion_blur(face, 9, 0)
    assert blurred.shape == face.shape and high_frequency(blurred) < 0.7 * high_frequency(face)
    # a horizontal blur flattens the differences along rows more than a vertical blur
    # does, and those between rows less
    def across(image: np.ndarray, axis: int) -> float:
        return float(np.abs(np.diff(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(int), axis=axis)).mean())

    vertical = motion_blur(face, 9, 90)
    assert across(blurred, 1) < 0.7 * across(vertical, 1) and across(blurred, 0) > across(vertical, 0) / 0.7
    assert np.array_equal(motion_blur(face, 1, 30), face)


def test_brightness(face):
    assert np.array_equal(brightness(face, 1.0), face)
    dark, bright = brightness(face, 0.5), brightness(face, 1.6)
    assert np.abs(dark.astype(int) - face.astype(int) // 2).max() <= 1
    assert bright.max() == 255 and bright.dtype == np.uint8  # clipped, not wrapped around
    assert (bright >= face).all() and (dark <= face).all()


def test_rotate(face):
    assert np.array_equal(rotate(face, 0), face)
    assert np.array_equal(rotate(face, 360), face)
    turned = rotate(face, 25)
    assert turned.shape == face.shape and not np.array_equal(turned, face)
    # the centre stays put; there and back again is close to where it began
    h, w = face.shape[:2]
    back = rotate(turned, -25)[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].astype(int)
    assert np.abs(back - face[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].astype(int)).mean() < 6


def test_jitter_box_stays_in_its_range():
    box = np.array([100.0, 50.0, 200.0, 170.0])
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, y1, x2, y2 = jitter_box(box, rng)
        assert 0.85 * 100 - 1e-9 <= x2 - x1 <= 1.15 * 100 + 1e-9
        assert abs((x1 + x2) / 2 - 150) <= 10 + 1e-9 and abs((y1 + y2) / 2 - 110) <= 12 + 1e-9
    assert np.array_equal(jitter_box(box, np.random.default_rng(0), (1.0, 1.0), 0.0), box)


def test_registry_is_seeded_and_shape_preserving(face):
    box = np.array([20.0, 20.0, 120.0, 120.0])
    for name, degradation in DEGRADATIONS.items():
        if degradation.image is None:
            assert degradation.box is not None, name
            a, b = degradation.box(box, record_rng(0, 3)), degradation.box(box, record_rng(0, 3))
            assert np.array_equal(a, b) and not np.array_equal(a, degradation.box(box, record_rng(1, 3))), name
            continue
        out = degradation.image(face, record_rng(0, 3), box)
        assert out.shape == face.shape and out.dtype == np.uint8 and not np.array_equal(out, face), name
        assert np.array_equal(out, degradation.image(face, record_rng(0, 3), box)), name  # same seed, same image
    # randomness differs between faces: the blur direction of face 0 and face 1
    blur = DEGRADATIONS["blur9"].image
    assert blur is not None
    assert not np.array_equal(blur(face, record_rng(0, 0), None), blur(face, record_rng(0, 1), None))


def test_parse_degradations():
    assert parse_degradations("all") == tuple(DEGRADATIONS)
    assert parse_degradations("jpeg30, face24,jpeg30") == ("jpeg30", "face24")
    with pytest.raises(UserError, match=r"unknown degradation nope; known: face24.*jitter, or all") as err:
        parse_degradations("face24,nope")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError):
        parse_degradations(",")
