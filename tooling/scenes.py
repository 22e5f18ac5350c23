"""Synthetic multi-face test videos with known ground truth.

Real labelled face images (../shared/data/faces) are composited onto a synthetic
background and moved along simple paths, so that tests, the benchmark and the kiosk
tests get videos where every face's identity, age, gender and true box is known for
every frame. The faces are read from the shared data at run time and never copied
into the repository.

    python -m tooling.scenes --out /tmp/demo.mp4 --people 4 --seconds 10
    python -m tooling.scenes --out /tmp/bench.mp4 --codec h264   # for benchmarks

The ground-truth box of a face approximates where MediaPipe's BlazeFace reports it:
the per-source face geometry below was measured by running the full-range detector
on composited faces. Measured on 640x480 scenarios (12 seeds x 10 s, 4 people):
frontal faces of 80-150 px are found at 95% recall (IoU >= 0.3, median IoU 0.82),
60-150 px at 90%.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from realtime.paths import ROOT as REPO_ROOT
from realtime.paths import SHARED_DATA
from training.labels import read_label_rows

DEFAULT_FACES_DIR = SHARED_DATA / "faces"
TRUTH_VERSION = 1

Point = tuple[float, float]
Box = tuple[int, int, int, int]  # x1, y1, x2, y2; x2/y2 exclusive
TurnKind = Literal["yaw", "roll", "away"]
State = Literal["frontal", "yaw", "roll", "away", "occluded", "absent"]
# States in which a face is drawn and listed in the per-frame truth.
SHOWN_STATES: frozenset[str] = frozenset({"frontal", "yaw", "roll"})


@dataclass(frozen=True)
class FaceGeometry:
    """Where the detector finds the face inside a source image, as fractions of it.

    Measured with the full-range BlazeFace model on 300 composited images per source
    at 110-140 px: mean detection box centre and side. Wiki crops keep a ~40% margin
    around the face; UTKFace crops are tight, the detector box is the whole image.
    Per-image spread is wide for wiki (3/4 views move the box by 0.15 face widths),
    hence a median IoU of ~0.73 there against ~0.88 for UTKFace.
    """

    cx: float
    cy: float
    side: float  # box side / image side
    # Soft elliptical mask around the face centre, in units of the face side: keeps
    # hair, chin and a bit of neck (context the detector relies on) and fades out the
    # photo's own background so the paste has no hard rectangular edge.
    mask_w: float
    mask_h: float
    mask_dy: float  # mask centre below the face centre, the neck carries more context than the crown
    feather: float  # Gaussian sigma of the mask edge
    # Tight crops are extended by this fraction of their side on every edge (see _extend).
    pad: float = 0.0
    pad_blur: float = 0.0


GEOMETRY: dict[str, FaceGeometry] = {
    "wiki": FaceGeometry(cx=0.48, cy=0.495, side=0.51, mask_w=1.75, mask_h=2.0, mask_dy=0.12, feather=0.08),
    "utkface": FaceGeometry(cx=0.49, cy=0.475, side=1.0, mask_w=1.5, mask_h=1.7, mask_dy=0.05, feather=0.04,
                            pad=0.25, pad_blur=0.1),
}


@dataclass(frozen=True)
class FaceRecord:
    """One labelled image from labels.csv."""

    file: str  # relative to the faces directory
    gender: str
    age: int
    race: str
    source: str
    orig_px: int


@dataclass(frozen=True)
class Path2D:
    """Straight walk of the face centre from start to end, optionally standing still.

    pause is a fraction (begin, end) of the person's time on screen during which they
    stand still; the walk is uniform over the remaining time, so a pause anywhere in
    the middle holds the face at the point it has reached.
    """

    start: Point
    end: Point
    pause: tuple[float, float] | None = None


@dataclass(frozen=True)
class Span:
    """Inclusive frame range."""

    first: int
    last: int

    def __contains__(self, frame: int) -> bool:
        return self.first <= frame <= self.last


@dataclass(frozen=True)
class Turn:
    """The head turns away for a span of frames.

    yaw: the face is squeezed horizontally to `amount` of its width (a crude profile);
    roll: the face is rotated by `amount` degrees; away: the back of the head is shown
    (a dark blob), so no face is visible.
    """

    span: Span
    kind: TurnKind
    amount: float = 0.0


@dataclass(frozen=True)
class Person:
    id: int
    face: FaceRecord
    first_frame: int
    last_frame: int  # inclusive
    path: Path2D
    size_start: float  # face box side in pixels at first_frame
    size_end: float  # ... at last_frame; larger when walking toward the camera
    turn: Turn | None = None
    # Short spans where something passes in front of the face: trackers must keep the
    # identity through them.
    occlusions: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Background:
    kind: Literal["plain", "gradient", "noise", "room"] = "room"
    color1: tuple[int, int, int] = (90, 100, 110)  # BGR
    color2: tuple[int, int, int] = (160, 150, 140)
    seed: int = 0


@dataclass(frozen=True)
class Scenario:
    width: int
    height: int
    fps: float
    n_frames: int
    background: Background
    people: tuple[Person, ...]
    faces_dir: str = str(DEFAULT_FACES_DIR)
    # Per-frame sensor noise (std, grey levels): static pixels otherwise encode to
    # identical blocks, which is unlike any camera.
    noise: float = 2.0
    seed: int | None = None


# --------------------------------------------------------------------------- geometry


def progress(path: Path2D, t: float) -> float:
    """Fraction of the walk done at time fraction t in [0, 1] of the person's life."""
    t = min(max(t, 0.0), 1.0)
    if path.pause is None:
        return t
    p0, p1 = path.pause
    moving = 1.0 - (p1 - p0)
    if moving <= 0.0:
        return 0.0
    if t <= p0:
        return t / moving
    if t <= p1:
        return p0 / moving
    return (t - (p1 - p0)) / moving


def life_fraction(person: Person, frame: int) -> float:
    span = person.last_frame - person.first_frame
    return 0.0 if span <= 0 else (frame - person.first_frame) / span


def centre_at(person: Person, frame: int) -> Point:
    u = progress(person.path, life_fraction(person, frame))
    (x0, y0), (x1, y1) = person.path.start, person.path.end
    return (x0 + (x1 - x0) * u, y0 + (y1 - y0) * u)


def size_at(person: Person, frame: int) -> float:
    # Size follows the walk, not the clock: someone standing still does not grow.
    u = progress(person.path, life_fraction(person, frame))
    return person.size_start + (person.size_end - person.size_start) * u


def state_at(person: Person, frame: int) -> State:
    if not person.first_frame <= frame <= person.last_frame:
        return "absent"
    if any(frame in s for s in person.occlusions):
        return "occluded"
    if person.turn is not None and frame in person.turn.span:
        return person.turn.kind
    return "frontal"


def square_box(centre: Point, side: float) -> Box:
    x1 = int(round(centre[0] - side / 2))
    y1 = int(round(centre[1] - side / 2))
    s = int(round(side))
    return (x1, y1, x1 + s, y1 + s)


def box_at(person: Person, frame: int) -> Box | None:
    """The true face box at a frame, or None when no face is visible."""
    state = state_at(person, frame)
    if state not in SHOWN_STATES:
        return None
    box = square_box(centre_at(person, frame), size_at(person, frame))
    if state == "yaw" and person.turn is not None:
        # The squeezed face keeps its height and centre.
        x1, y1, x2, y2 = box
        half = (x2 - x1) * person.turn.amount / 2
        cx = (x1 + x2) / 2
        box = (int(round(cx - half)), y1, int(round(cx + half)), y2)
    return box


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_inside(box: Box, width: int, height: int) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height


# ------------------------------------------------------------------------ face data


def resolve_faces_dir(faces_dir: str | Path | None) -> Path:
    path = Path(faces_dir) if faces_dir is not None else DEFAULT_FACES_DIR
    if not path.is_absolute():
        # The working directory first, as for any CLI path; then the repository root,
        # which the data README's "../shared/data" is relative to.
        path = path.resolve() if path.exists() else (REPO_ROOT / path).resolve()
    if not (path / "labels.csv").is_file():
        raise FileNotFoundError(f"no labels.csv in faces directory {path}")
    return path


@lru_cache(maxsize=4)
def load_labels(faces_dir: Path) -> tuple[FaceRecord, ...]:
    """Faces with a usable label: known gender and an age in 1..100 (the project's one reader)."""
    rows = read_label_rows(faces_dir / "labels.csv")
    return tuple(
        FaceRecord(r.file, r.gender, r.age, r.race, r.source, r.orig_px)
        for r in rows
        if r.age is not None and r.gender is not None and r.source in GEOMETRY
    )


@lru_cache(maxsize=256)
def _decoded(path: str) -> np.ndarray | None:
    # Shared between callers: treat as read-only.
    return cv2.imread(path, cv2.IMREAD_COLOR)


def colourfulness(img: np.ndarray) -> float:
    """Mean absolute channel difference; about 0 for black-and-white photos."""
    f = img.astype(np.int16)
    return float(np.mean(np.abs(f[..., 0] - f[..., 1])) + np.mean(np.abs(f[..., 1] - f[..., 2])))


def usable_face(img: np.ndarray | None) -> bool:
    """Images the detector handles reliably.

    Measured: black-and-white wiki photos (about 15% of them) are found at 41%
    recall at 60 px versus 93% for colour ones; non-square crops were clipped at a
    photo edge, so the face is off-centre and the fixed geometry does not hold.
    """
    if img is None:
        return False
    h, w = img.shape[:2]
    return abs(w / h - 1.0) <= 0.05 and colourfulness(img) >= 4.0


def _ellipse_mask(size: int, cx: float, cy: float, side: float, geom: FaceGeometry) -> np.ndarray:
    """Soft elliptical alpha around a face at (cx, cy) of the given side, in pixels."""
    cy += geom.mask_dy * side
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = ((xx - cx) / (geom.mask_w * side / 2)) ** 2 + ((yy - cy) / (geom.mask_h * side / 2)) ** 2
    mask = (r <= 1.0).astype(np.float32)
    sigma = max(geom.feather * side, 0.5)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # The photo edge itself must fade too, or a mask reaching past it leaves a seam.
    edge = np.ones((size, size), np.float32)
    edge[[0, -1], :] = 0
    edge[:, [0, -1]] = 0
    edge = cv2.GaussianBlur(edge, (0, 0), max(sigma / 2, 0.5))
    return mask * edge


def _extend(img: np.ndarray, pad: float, blur: float) -> np.ndarray:
    """Continue a tight crop past its edges with a blurred copy of its border.

    Measured on UTKFace: the smeared surround reads as head and neck to BlazeFace,
    recall at 65 px goes from 93% to 97%, and detections sit closer to the truth.
    """
    n = img.shape[0]
    p = int(round(pad * n))
    big = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(big, (0, 0), blur * n)
    keep = np.zeros(big.shape[:2], np.float32)
    keep[p:p + n, p:p + n] = 1.0
    keep = cv2.GaussianBlur(keep, (0, 0), 0.03 * n)[..., None]
    return (big * keep + blurred * (1.0 - keep)).astype(np.uint8)


# Small caches: a person's size changes monotonically, so only the current few
# sizes per person are ever reused, and padded float sprites weigh up to ~1.5 MB.
@lru_cache(maxsize=64)
def _face_bgra(path: str, source: str) -> tuple[np.ndarray, float, float, float]:
    """The prepared source: float32 BGRA with its soft mask, and the face centre and
    side in its pixels."""
    img = _decoded(path)
    if img is None:
        raise FileNotFoundError(f"cannot read face image {path}")
    geom = GEOMETRY[source]
    h, w = img.shape[:2]
    n = w
    img = cv2.resize(img, (n, n)) if h != w else img  # usable_face allows only a small aspect deviation
    cx, cy, side = geom.cx * n, geom.cy * n, geom.side * n
    if geom.pad > 0:
        img = _extend(img, geom.pad, geom.pad_blur)
        p = (img.shape[0] - n) / 2
        cx, cy, n = cx + p, cy + p, img.shape[0]
    mask = _ellipse_mask(n, cx, cy, side, geom)
    return np.dstack([img.astype(np.float32), mask]), cx, cy, side


@dataclass(frozen=True, eq=False)
class Sprite:
    """A face ready to blend: colour, alpha, and the face centre in its pixels."""

    bgr: np.ndarray  # uint8 (h, w, 3)
    alpha: np.ndarray  # float32 (h, w), 0..1
    cx: float
    cy: float


def _sprite(bgra: np.ndarray, cx: float, cy: float) -> Sprite:
    bgr = np.clip(bgra[..., :3] + 0.5, 0, 255).astype(np.uint8)
    return Sprite(bgr, np.ascontiguousarray(np.clip(bgra[..., 3], 0.0, 1.0)), cx, cy)


def _scaled_bgra(path: str, source: str, face_px: int) -> tuple[np.ndarray, float, float]:
    src, cx, cy, side = _face_bgra(path, source)
    n = src.shape[0]
    m = max(2, int(round(n * face_px / side)))
    interp = cv2.INTER_AREA if m < n else cv2.INTER_LINEAR
    return cv2.resize(src, (m, m), interpolation=interp), cx * m / n, cy * m / n


@lru_cache(maxsize=128)
def _face_sprite(path: str, source: str, face_px: int, turn: Turn | None = None) -> Sprite:
    """The prepared source scaled so its face box is face_px wide, turned if asked.

    Cached per integer size: faces change size by under a pixel per frame, so
    consecutive frames share a sprite.
    """
    bgra, cx, cy = _scaled_bgra(path, source, face_px)
    if turn is None:
        return _sprite(bgra, cx, cy)
    h, w = bgra.shape[:2]
    if turn.kind == "yaw":
        nw = max(2, int(round(w * turn.amount)))
        return _sprite(cv2.resize(bgra, (nw, h), interpolation=cv2.INTER_AREA), cx * nw / w, cy)
    # roll: rotate about the face centre onto a canvas large enough for any angle
    d = int(math.ceil(math.hypot(w, h)))
    rot = cv2.getRotationMatrix2D((cx, cy), turn.amount, 1.0)
    rot[0, 2] += d / 2 - cx
    rot[1, 2] += d / 2 - cy
    out = cv2.warpAffine(bgra, rot, (d, d), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return _sprite(out, d / 2, d / 2)


def clear_caches() -> None:
    """Drops every decoded, prepared and scaled face image held between frames.

    For long runs (the kiosk soak) that measure someone else's memory: between scenes
    these caches only grow the generator's share of the process.
    """
    for cached in (load_labels, _decoded, _face_bgra, _face_sprite):
        cached.cache_clear()


# ---------------------------------------------------------------------- compositing


def render_background(bg: Background, width: int, height: int) -> np.ndarray:
    """A face-free backdrop: plain, gradient, noise (gradient + soft blotches + grain)
    or room (noise + a few muted flat panels: doors, shelves, windows).

    Measured: face-sized cloud texture (noise at a scale of tens of pixels) drops
    BlazeFace recall on 50-80 px faces from ~90% to ~50-80%, so blotches are kept
    much larger than a face and grain much smaller.
    """
    c1 = np.array(bg.color1, np.float32)
    c2 = np.array(bg.color2, np.float32)
    if bg.kind == "plain":
        return np.full((height, width, 3), c1, np.uint8)
    # Diagonal gradient: vertical and horizontal light falloff, like a lit room.
    ramp = (np.linspace(0, 1, height, dtype=np.float32)[:, None] * 0.7
            + np.linspace(0, 1, width, dtype=np.float32)[None, :] * 0.3)
    img = c1 + (c2 - c1) * ramp[..., None]
    rng = np.random.default_rng(bg.seed)
    if bg.kind in ("noise", "room"):
        # Mostly brightness variation with a little colour: rooms are not rainbow-coloured.
        for cells, amp in ((6, 20.0), (max(8, width // 7), 3.0)):
            shape = (max(2, cells * height // width), cells)
            small = rng.normal(0, 1, shape + (1,)) + 0.25 * rng.normal(0, 1, shape + (3,))
            img += cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC) * amp
    if bg.kind == "room":
        mean = img.reshape(-1, 3).mean(0)
        for _ in range(int(rng.integers(3, 8))):
            w = int(rng.uniform(0.08, 0.45) * width)
            h = int(rng.uniform(0.12, 0.6) * height)
            x, y = int(rng.integers(-w // 2, width)), int(rng.integers(-h // 2, height))
            colour = 0.5 * mean + 0.5 * rng.uniform(30, 220, 3)
            shade = np.linspace(1.0, rng.uniform(0.75, 1.1), h, dtype=np.float32)[:, None, None]
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if x0 < x1 and y0 < y1:
                img[y0:y1, x0:x1] = (colour * shade)[y0 - y:y1 - y]
        img = cv2.GaussianBlur(img, (0, 0), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _blend(frame: np.ndarray, sprite: Sprite, x0: int, y0: int) -> None:
    """Alpha-blend a sprite with its top-left at (x0, y0), clipped to the frame."""
    H, W = frame.shape[:2]
    h, w = sprite.alpha.shape
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    sl = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    a = np.ascontiguousarray(sprite.alpha[sl])
    # blendLinear does the whole blend in one native pass, ~2x faster than numpy.
    frame[fy0:fy1, fx0:fx1] = cv2.blendLinear(np.ascontiguousarray(frame[fy0:fy1, fx0:fx1]),
                                              np.ascontiguousarray(sprite.bgr[sl]), 1.0 - a, a)


def _draw_blob(frame: np.ndarray, centre: Point, axes: tuple[float, float], color: tuple[int, int, int],
               feather: float) -> None:
    w = int(axes[0] * 2 + feather * 6) + 2
    h = int(axes[1] * 2 + feather * 6) + 2
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (w // 2, h // 2), (int(axes[0]), int(axes[1])), 0, 0, 360, 1.0, -1)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), feather)
    sprite = Sprite(np.full((h, w, 3), color, np.uint8), mask, w / 2, h / 2)
    _blend(frame, sprite, int(round(centre[0])) - w // 2, int(round(centre[1])) - h // 2)


def _draw_person(frame: np.ndarray, person: Person, frame_idx: int, faces_dir: Path) -> None:
    state = state_at(person, frame_idx)
    if state == "absent":
        return
    centre = centre_at(person, frame_idx)
    side = size_at(person, frame_idx)
    if state == "occluded":
        # A flat panel in front of the head: the face disappears without the scene
        # changing elsewhere, like someone passing between camera and person.
        x1, y1, x2, y2 = square_box(centre, side * 1.6)
        shade = 60 + (person.id * 37) % 120
        cv2.rectangle(frame, (x1, y1), (x2, y2), (shade, shade + 10, shade + 20), -1)
        return
    if state == "away":
        # Back of the head: hair-coloured, no features, so no detection is expected.
        _draw_blob(frame, (centre[0], centre[1] - 0.05 * side), (0.55 * side, 0.68 * side), (30, 35, 45),
                   0.06 * side)
        return
    turn = person.turn if state in ("yaw", "roll") else None
    sprite = _face_sprite(str(faces_dir / person.face.file), person.face.source, max(2, int(round(side))), turn)
    _blend(frame, sprite, int(round(centre[0] - sprite.cx)), int(round(centre[1] - sprite.cy)))


_NOISE_PAD = 8


def _noise_field(scenario: Scenario) -> tuple[np.ndarray, np.ndarray] | None:
    """One (positive, negative) uint8 noise field slightly larger than the frame.

    Each frame adds a differently offset window of it (64 offsets): fresh Gaussian
    noise for every 1080p frame would cost more than all the rest of the rendering.
    """
    if scenario.noise <= 0:
        return None
    rng = np.random.default_rng((scenario.background.seed, 7))
    shape = (scenario.height + _NOISE_PAD, scenario.width + _NOISE_PAD, 3)
    n = rng.standard_normal(shape, dtype=np.float32) * np.float32(scenario.noise)
    return np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)


def frames(scenario: Scenario) -> Iterator[np.ndarray]:
    """Render the scenario frame by frame (BGR uint8), without touching the disk.

    Each yielded array is new, so callers may keep or modify it.
    """
    faces_dir = resolve_faces_dir(scenario.faces_dir)
    bg = render_background(scenario.background, scenario.width, scenario.height)
    noise = _noise_field(scenario)
    H, W = scenario.height, scenario.width
    canvas = np.empty_like(bg)  # reused: a fresh 1080p allocation per frame costs more than the drawing
    for f in range(scenario.n_frames):
        np.copyto(canvas, bg)
        # Far (small) faces first, so nearer people pass in front of them.
        alive = [p for p in scenario.people if p.first_frame <= f <= p.last_frame]
        for person in sorted(alive, key=lambda p: size_at(p, f)):
            _draw_person(canvas, person, f, faces_dir)
        if noise is None:
            frame = canvas.copy()
        else:
            dy, dx = divmod((f * 37) % (_NOISE_PAD * _NOISE_PAD), _NOISE_PAD)
            frame = cv2.add(canvas, noise[0][dy:dy + H, dx:dx + W])
            cv2.subtract(frame, noise[1][dy:dy + H, dx:dx + W], dst=frame)
        yield frame


# --------------------------------------------------------------------- ground truth


def ground_truth(scenario: Scenario) -> dict:
    """JSON-serialisable truth: who is where in every frame.

    frames[f] lists the faces drawn in frame f ({"id", "box", "state"}), state being
    frontal, yaw (squeezed; the box is squeezed too) or roll (rotated; the box is the
    unrotated one); turned-away and occluded faces are not listed, although the
    person is still present from first_frame to last_frame. Measure detection
    recall on frontal faces: BlazeFace finds about half the yaw and no roll faces.
    """
    people = []
    per_frame: list[list[dict]] = [[] for _ in range(scenario.n_frames)]
    for p in scenario.people:
        shown = frontal = 0
        for f in range(max(p.first_frame, 0), min(p.last_frame, scenario.n_frames - 1) + 1):
            box = box_at(p, f)
            if box is None:
                continue
            state = state_at(p, f)
            shown += 1
            frontal += state == "frontal"
            per_frame[f].append({"id": p.id, "box": list(box), "state": state})
        people.append({
            "id": p.id,
            "file": p.face.file,
            "gender": p.face.gender,
            "age": p.face.age,
            "race": p.face.race,
            "source": p.face.source,
            "first_frame": p.first_frame,
            "last_frame": p.last_frame,
            "visible_frames": shown,
            "frontal_frames": frontal,
            "turn": None if p.turn is None else {
                "first": p.turn.span.first, "last": p.turn.span.last,
                "kind": p.turn.kind, "amount": p.turn.amount},
            "occlusions": [[s.first, s.last] for s in p.occlusions],
        })
    return {
        "version": TRUTH_VERSION,
        "width": scenario.width,
        "height": scenario.height,
        "fps": scenario.fps,
        "n_frames": scenario.n_frames,
        "seed": scenario.seed,
        "box_format": "x1,y1,x2,y2 pixels, x2/y2 exclusive",
        "people": people,
        "frames": per_frame,
    }


def truth_path(video_path: str | Path) -> Path:
    """Where render() writes the truth for a video: X.mp4 -> X.truth.json."""
    return Path(video_path).with_suffix(".truth.json")


Codec = Literal["mp4v", "h264"]
CODECS: tuple[str, ...] = ("mp4v", "h264")
# libx264 settings for "h264": the codec cameras send, so that decode-only timings are
# realistic (the same scene in MPEG-4 part 2 decodes about twice as fast, measured in
# docs/benchmarks.md).
# CRF 23 is x264's default quality and preset medium its default speed: what FFmpeg and
# most tools write when given no options (High profile, CABAC, 3 B-frames, 3 reference
# frames). The faster presets keep one or two reference frames; encoding speed matters
# little for a benchmark asset written once.
H264_OPTIONS: dict[str, str] = {"crf": "23", "preset": "medium"}
H264_PIX_FMT = "yuv420p"  # what cameras send and every decoder reads


def _write_mp4v(scenario: Scenario, out_path: Path) -> None:
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), float(scenario.fps),
                             (scenario.width, scenario.height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open video writer for {out_path}")
    try:
        for frame in frames(scenario):
            writer.write(frame)
    finally:
        writer.release()


def _write_h264(scenario: Scenario, out_path: Path) -> None:
    import av  # the dev extra: only H.264 scenes need PyAV (its wheels ship libx264)

    if scenario.width % 2 or scenario.height % 2:
        raise ValueError(f"h264 (yuv420p) needs an even frame size, got {scenario.width}x{scenario.height}")
    rate = Fraction(scenario.fps).limit_denominator(1001)
    with av.open(str(out_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options=dict(H264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = scenario.width, scenario.height, H264_PIX_FMT
        for frame in frames(scenario):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode(None))  # flush the frames x264 holds for look-ahead


def _check_readback(scenario: Scenario, out_path: Path) -> None:
    cap = cv2.VideoCapture(str(out_path))
    try:
        got = (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
               int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()
    want = (scenario.n_frames, scenario.width, scenario.height)
    if got != want:
        raise RuntimeError(f"{out_path} reads back as {got[0]} frames {got[1]}x{got[2]}, "
                           f"expected {want[0]} frames {want[1]}x{want[2]}")


def read_frames(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """A video's frames in order (the first `limit`), as OpenCV decodes them: a rendered
    scene, or a shared clip, read whole for comparisons and tests."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def render(scenario: Scenario, out_path: str | Path, codec: Codec = "mp4v") -> dict:
    """Write the video and its truth JSON beside it; return the truth.

    codec "mp4v" (MPEG-4 part 2, OpenCV's writer) is quick to write and decode;
    "h264" (libx264 through PyAV, H264_OPTIONS) is what benchmarks should decode.
    """
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    (_write_h264 if codec == "h264" else _write_mp4v)(scenario, out_path)
    _check_readback(scenario, out_path)
    truth = ground_truth(scenario)
    truth_path(out_path).write_text(json.dumps(truth, separators=(",", ":")))
    return truth


# ---------------------------------------------------------------------- scenarios


def _pick_faces(rng: np.random.Generator, faces_dir: Path, n: int, sources: Sequence[str],
                min_orig_px: int) -> list[FaceRecord]:
    pool = [r for r in load_labels(faces_dir) if r.source in sources and r.orig_px >= min_orig_px]
    if not pool:
        raise ValueError(f"no faces from {list(sources)} with orig_px >= {min_orig_px} in {faces_dir}")
    picked: list[FaceRecord] = []
    # Alternate genders so small scenarios still exercise both classes.
    want_gender = ["female", "male"] if rng.random() < 0.5 else ["male", "female"]
    for idx in rng.permutation(len(pool)):
        if len(picked) == n:
            break
        rec = pool[int(idx)]
        if rec.gender != want_gender[len(picked) % 2]:
            continue
        if usable_face(_decoded(str(faces_dir / rec.file))):
            picked.append(rec)
    if len(picked) < n:
        raise ValueError(f"only {len(picked)} usable faces found in {faces_dir}")
    return picked


def _overlap(a: Person, b: Person, step: int = 3) -> float:
    """Worst IoU of the two heads (padded face boxes) over the frames both are on screen."""
    lo, hi = max(a.first_frame, b.first_frame), min(a.last_frame, b.last_frame)
    worst = 0.0
    for f in range(lo, hi + 1, step):
        ba = square_box(centre_at(a, f), size_at(a, f) * 1.5)
        bb = square_box(centre_at(b, f), size_at(b, f) * 1.5)
        worst = max(worst, iou(ba, bb))
    return worst


def _sample_person(rng: np.random.Generator, pid: int, face: FaceRecord, width: int, height: int, fps: float,
                   n_frames: int, face_px: tuple[float, float], turn_prob: float,
                   occlusion_prob: float) -> Person:
    life = int(round(n_frames * rng.uniform(0.45, 0.85)))
    life = min(max(life, min(n_frames, 8)), n_frames)
    first = int(rng.integers(0, n_frames - life + 1))
    last = first + life - 1
    size0 = rng.uniform(*face_px)
    if rng.random() < 0.4:  # walks toward the camera
        size1 = min(size0 * rng.uniform(1.2, 1.6), face_px[1])
    else:
        size1 = size0 * rng.uniform(0.9, 1.1)
    size1 = float(np.clip(size1, face_px[0], face_px[1]))
    big = max(size0, size1)
    margin = big / 2 + 2
    xs, ys = (margin, width - margin), (margin, height - margin)

    def point() -> Point:
        return (float(rng.uniform(*xs)), float(rng.uniform(*ys)))

    start = point()
    # A walk of at most ~2 face widths per second keeps motion plausible for a
    # tracker; people mostly move sideways across the view.
    reach = 2.0 * big * life / fps
    end = point()
    dx, dy = end[0] - start[0], (end[1] - start[1]) * 0.4
    d = math.hypot(dx, dy)
    if d > reach:
        dx, dy = dx * reach / d, dy * reach / d
    end = (float(np.clip(start[0] + dx, *xs)), float(np.clip(start[1] + dy, *ys)))
    pause = None
    if rng.random() < 0.5:
        p0 = rng.uniform(0.25, 0.5)
        pause = (float(p0), float(p0 + rng.uniform(0.15, 0.35)))
    turn = None
    if rng.random() < turn_prob and life >= 3 * fps:
        kind: TurnKind = ("yaw", "roll", "away")[int(rng.integers(0, 3))]
        length = int(rng.uniform(0.4, 1.0) * fps)
        t0 = first + int(rng.uniform(0.3, 0.6) * life)
        amount = {"yaw": rng.uniform(0.4, 0.55), "roll": rng.choice([-1, 1]) * rng.uniform(70, 110), "away": 0.0}[kind]
        turn = Turn(Span(t0, min(t0 + length - 1, last)), kind, float(amount))
    occlusions: tuple[Span, ...] = ()
    if rng.random() < occlusion_prob and life >= 2 * fps:
        length = int(rng.integers(3, 13))  # 0.1-0.5 s: a gap a tracker should bridge
        t0 = first + int(rng.uniform(0.1, 0.25) * life)
        # Ends before any turn, so every hidden frame has exactly one cause.
        t1 = min(t0 + length - 1, last, turn.span.first - 2 if turn is not None else last)
        if t1 >= t0:
            occlusions = (Span(t0, t1),)
    return Person(pid, face, first, last, Path2D(start, end, pause), float(size0), float(size1), turn, occlusions)


def make_scenario(seed: int, n_people: int = 4, width: int = 640, height: int = 480, fps: float = 25.0,
                  seconds: float = 10.0, *, faces_dir: str | Path | None = None,
                  face_px: tuple[float, float] | None = None, sources: Sequence[str] = ("wiki", "utkface"),
                  min_orig_px: int = 100, turn_prob: float = 0.3, occlusion_prob: float = 0.3,
                  background: Background | None = None, noise: float = 2.0, tries: int = 60) -> Scenario:
    """Sample a scenario: people with staggered entries and mostly separate paths.

    face_px is the (min, max) face box side; default 60..150 px, capped at a third
    of the frame height. min_orig_px drops wiki images that were upscaled from tiny
    originals. Ids are given in order of entry.
    """
    if n_people < 0:
        raise ValueError("n_people must be >= 0")
    if width < 32 or height < 32:
        raise ValueError("frame must be at least 32x32")
    if fps <= 0 or seconds <= 0:
        raise ValueError("fps and seconds must be positive")
    lo, hi = face_px if face_px is not None else (60.0, 150.0)
    hi = min(hi, height / 3) if face_px is None else hi
    lo = min(lo, hi)
    if lo < 8 or hi > min(width, height) - 4:
        raise ValueError(f"face size {lo:g}..{hi:g} px does not fit a {width}x{height} frame")
    n_frames = max(1, int(round(seconds * fps)))
    rng = np.random.default_rng(seed)
    fdir = resolve_faces_dir(faces_dir)
    faces = _pick_faces(rng, fdir, n_people, sources, min_orig_px)
    people: list[Person] = []
    for i, face in enumerate(faces):
        best, best_overlap = None, math.inf
        for _ in range(tries):
            cand = _sample_person(rng, i, face, width, height, fps, n_frames, (lo, hi), turn_prob, occlusion_prob)
            worst = max((_overlap(cand, other) for other in people), default=0.0)
            if worst < best_overlap:
                best, best_overlap = cand, worst
            if worst == 0.0:
                break
        assert best is not None
        people.append(best)
    people.sort(key=lambda p: (p.first_frame, p.id))
    people = [replace(p, id=i) for i, p in enumerate(people)]
    if background is None:
        c1 = tuple(int(v) for v in rng.integers(40, 150, 3))
        c2 = tuple(int(v) for v in rng.integers(100, 220, 3))
        kind = ("gradient", "noise", "room", "room")[int(rng.integers(0, 4))]
        background = Background(kind, c1, c2, int(rng.integers(0, 2**31)))
    return Scenario(width, height, fps, n_frames, background, tuple(people), str(fdir), noise, seed)


def scenario_dict(scenario: Scenario) -> dict:
    """The full spec (paths, sizes, turns) as JSON-serialisable data, e.g. to log
    what a failing test rendered."""
    return asdict(scenario)


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if not (32 <= w <= 7680 and 32 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"size {w}x{h} out of range 32x32..7680x4320")
    return w, h


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= n <= 32:
        raise argparse.ArgumentTypeError(f"must be 0..32, got {n}")
    return n


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"face size must be MIN-MAX pixels, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"face size range {text!r} must satisfy 0 < MIN <= MAX")
    return lo, hi


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return v
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m tooling.scenes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output .mp4; truth goes to <out>.truth.json")
    parser.add_argument("--people", type=_count, default=4, metavar="N", help="0..32 people (default 4)")
    parser.add_argument("--seconds", type=_positive(float), default=10.0)
    parser.add_argument("--size", type=_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--fps", type=_positive(float), default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--face-px", type=_range, default=None, help="MIN-MAX face side in px (default 60-150)")
    parser.add_argument("--faces-dir", default=None, help=f"labelled faces (default {DEFAULT_FACES_DIR})")
    parser.add_argument("--codec", choices=CODECS, default="mp4v",
                        help="mp4v (default; OpenCV) or h264 (libx264 through PyAV, CRF 23, preset medium: "
                             "realistic decode cost for benchmarks)")
    args = parser.parse_args(argv)
    if not args.out.lower().endswith(".mp4"):
        parser.error(f"--out must end in .mp4, got {args.out!r}")
    if args.seconds * args.fps > 100_000:
        parser.error("video too long: seconds * fps must be at most 100000 frames")
    t0 = time.perf_counter()
    try:
        scenario = make_scenario(args.seed, args.people, args.size[0], args.size[1], args.fps, args.seconds,
                                 faces_dir=args.faces_dir, face_px=args.face_px)
        truth = render(scenario, args.out, args.codec)
    except (ValueError, OSError, RuntimeError, ImportError, cv2.error) as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 1
    people = truth["people"]
    genders = sum(p["gender"] == "female" for p in people)
    ages = [p["age"] for p in people]
    n_boxes = sum(len(f) for f in truth["frames"])
    age_txt = f", ages {min(ages)}-{max(ages)}" if ages else ""
    print(f"wrote {args.out} ({args.codec}): {scenario.n_frames} frames {scenario.width}x{scenario.height} @ {scenario.fps:g} fps, "
          f"{len(people)} people ({genders} female, {len(people) - genders} male{age_txt}), "
          f"{n_boxes} face boxes, truth {truth_path(args.out)}, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
