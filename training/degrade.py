"""Controlled degradations of face images, for robustness evaluation (`training.evaluate --degrade`).

Cameras do not deliver the clean, well-lit, well-framed portraits the model is trained and
evaluated on: faces are small and far away, streams are JPEG-compressed, people move,
rooms are dark or overexposed, heads roll, and the detector's box wobbles. Each function
here imitates one of these on an image as `cv2.imread` reads it (BGR uint8, H x W x 3) and
returns a new image of the same shape and dtype; the input is never modified. Randomness
(blur direction, rotation sign, box jitter) comes only from the numpy Generator passed in,
so a seeded run is reproducible.

`DEGRADATIONS` names the settings that the evaluation runs. Most act on the image before
detection, like a camera would. "jitter" acts on the detector's box instead (`jitter_box`),
since detector noise happens after the camera; the evaluation applies it at the crop step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from realtime.errors import UserError

Image = np.ndarray  # H x W x 3 uint8 (BGR as cv2 reads it; every function here is channel-order agnostic)
Box = np.ndarray  # (x1, y1, x2, y2) float pixels


class DegradationError(UserError):
    """An unknown degradation name."""


# --- the degradations ------------------------------------------------------------------


def downscale(image: Image, face_px: int, face_width: float | None = None) -> Image:
    """The image as a camera sees a face `face_px` wide: shrunk (area averaging, as a
    sensor integrates light) so that the face is about `face_px` wide, then enlarged back
    to its size with bilinear interpolation, so the detail is lost but the shape kept.

    `face_width` is the face's width in pixels in `image` (the detector box on the clean
    image). Without it the image's shorter side stands for the face: right for tightly
    cropped portraits (UTKFace: box about 0.98 of the side), but for loosely cropped ones
    (wiki: about 0.5) the face ends up about half as wide as `face_px`, a harsher test.
    Never enlarges: a face already smaller than `face_px` is returned unchanged (a copy).
    """
    h, w = image.shape[:2]
    width = float(face_width) if face_width and face_width > 0 else float(min(h, w))
    scale = face_px / width
    if scale >= 1.0:
        return image.copy()
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(image: Image, quality: int) -> Image:
    """The image after a JPEG round trip at `quality` (1-100), as a compressed stream delivers it."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # cv2 fails only on images it cannot encode at all, which callers never pass
        raise ValueError(f"cannot JPEG-encode an image of shape {image.shape}")
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).reshape(image.shape)


def motion_blur_kernel(length_px: int, angle: float) -> np.ndarray:
    """A normalised line kernel `length_px` long at `angle` degrees (0: horizontal)."""
    length = max(1, int(length_px))
    size = length if length % 2 else length + 1  # odd, so the line is centred on a pixel
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length):
        kernel[round(c + t * dy), round(c + t * dx)] = 1.0
    return kernel / kernel.sum()


def motion_blur(image: Image, length_px: int, angle: float) -> Image:
    """The image smeared along a straight line of `length_px` pixels at `angle` degrees, as
    a subject moving during the exposure; length 1 is the identity."""
    if length_px <= 1:
        return image.copy()
    return cv2.filter2D(image, -1, motion_blur_kernel(length_px, angle), borderType=cv2.BORDER_REPLICATE)


def brightness(image: Image, factor: float) -> Image:
    """Every pixel value times `factor`, clipped to 0-255: below 1 a dark room, above 1 an
    overexposed one (where bright skin saturates to white and its detail is lost)."""
    if factor == 1.0:
        return image.copy()
    return np.clip(np.rint(image.astype(np.float32) * factor), 0, 255).astype(np.uint8)


def rotate(image: Image, degrees: float) -> Image:
    """The image rotated by `degrees` (counter-clockwise) about its centre, same size, the
    corners filled by replicating the border (as the crop does); 0 is the identity."""
    if degrees % 360 == 0:
        return image.copy()
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(degrees), 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def jitter_box(box: Box, rng: np.random.Generator, scale: tuple[float, float] = (0.85, 1.15), shift: float = 0.1) -> Box:
    """The detector box as a noisier detector would give it: its size times U(scale), its
    centre moved by U(-shift, shift) of its width and height, independently in x and y."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    s = rng.uniform(*scale)
    cx = (x1 + x2) / 2 + rng.uniform(-shift, shift) * w
    cy = (y1 + y2) / 2 + rng.uniform(-shift, shift) * h
    return np.array([cx - s * w / 2, cy - s * h / 2, cx + s * w / 2, cy + s * h / 2], dtype=np.float64)


# --- the named settings ------------------------------------------------------------------

# image, its Generator, the face box on the clean image (None when no face was found)
ImageFn = Callable[[Image, np.random.Generator, "Box | None"], Image]
BoxFn = Callable[[Box, np.random.Generator], Box]


@dataclass(frozen=True)
class Degradation:
    """One named setting: an image transform applied before detection, or a box transform
    applied to the detector's box before the crop (exactly one of them)."""

    description: str
    image: ImageFn | None = None
    box: BoxFn | None = None
    needs_face_box: bool = False  # `image` wants the face box found on the clean image


def _face(px: int) -> Degradation:
    def apply(image: Image, rng: np.random.Generator, box: Box | None) -> Image:
        return downscale(image, px, None if box is None else float(box[2] - box[0]))

    return Degradation(f"face shrunk to {px} px wide and back", image=apply, needs_face_box=True)


def _signed(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


DEGRADATIONS: dict[str, Degradation] = {
    "face24": _face(24),
    "face32": _face(32),
    "face48": _face(48),
    "jpeg30": Degradation("JPEG quality 30", image=lambda im, rng, box: jpeg(im, 30)),
    "blur9": Degradation("motion blur 9 px, random direction", image=lambda im, rng, box: motion_blur(im, 9, rng.uniform(0, 180))),
    "dark0.5": Degradation("brightness x0.5", image=lambda im, rng, box: brightness(im, 0.5)),
    "bright1.6": Degradation("brightness x1.6", image=lambda im, rng, box: brightness(im, 1.6)),
    "rotate25": Degradation("rotated 25 degrees, random side", image=lambda im, rng, box: rotate(im, 25 * _signed(rng))),
    "jitter": Degradation("detector box scaled U(0.85,1.15), shifted U(-0.1,0.1)", box=lambda b, rng: jitter_box(b, rng)),
}


def parse_degradations(text: str) -> tuple[str, ...]:
    """"NAME[,NAME...]" or "all" as registry names, in the order given, without repeats."""
    if text.strip() == "all":
        return tuple(DEGRADATIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown or not names:
        raise DegradationError(
            f"unknown degradation {', '.join(unknown) or repr(text)}; known: {', '.join(DEGRADATIONS)}, or all"
        )
    return tuple(dict.fromkeys(names))


def record_rng(seed: int, index: int) -> np.random.Generator:
    """The Generator for one face: the same face gets the same draw whatever else is scored."""
    return np.random.default_rng([seed, index])


# --- applying one to a face image ---------------------------------------------------------


class JitteredDetector:
    """`detector` with each box passed through a degradation's box transform: detector
    noise applied at the crop step, leaving the image and `crop_for_model` as served."""

    def __init__(self, detector: Any, jitter: BoxFn, rng: np.random.Generator) -> None:
        self.detector, self.jitter, self.rng = detector, jitter, rng

    def detect(self, frame: np.ndarray) -> Any:
        import copy

        found = copy.copy(self.detector.detect(frame))
        if len(found):
            found.xyxy = np.stack([self.jitter(box, self.rng) for box in found.xyxy]).astype(found.xyxy.dtype)
        return found


def clean_face_box(image: np.ndarray, detector: Any) -> np.ndarray | None:
    """The face box that `crop_for_model` would use on `image`, in its coordinates; None
    when there is none. Face-size degradations scale by it."""
    pad = max(image.shape[:2]) // 2
    found = detector.detect(cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    if len(found) == 0:
        return None
    areas = (found.xyxy[:, 2] - found.xyxy[:, 0]) * (found.xyxy[:, 3] - found.xyxy[:, 1])
    return np.asarray(found.xyxy[int(np.argmax(areas * found.confidence))], np.float64) - pad


def degraded_input(image: np.ndarray, detector: Any, degradation: Degradation | None, rng: np.random.Generator) -> tuple[np.ndarray, Any]:
    """The image and the detector to crop it with, under `degradation` (as they are without)."""
    if degradation is None:
        return image, detector
    if degradation.box is not None:
        return image, JitteredDetector(detector, degradation.box, rng)
    box = clean_face_box(image, detector) if degradation.needs_face_box else None
    assert degradation.image is not None
    return degradation.image(image, rng, box), detector
