"""Labelled face images from shared/data/faces, preprocessing, and accuracy by source.

The images are research data: they are read from the shared folder beside the repo
and never copied into it. Each image is used whole as the face crop (wiki crops are
loose, with margin; UTKFace crops are aligned and tighter), so the numbers measured
here are "whole-image" numbers, not numbers behind the live face detector.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from export.parity import Runner, decode_outputs
from realtime.metadata import ModelMetadata
from realtime.model import preprocess_crops
from training.labels import FACES_DIR, read_label_rows


@dataclass(frozen=True)
class Face:
    file: str  # relative to the faces folder
    source: str  # "wiki" or "utkface"
    male: bool
    age: int | None  # None where the label is missing or impossible


def load_labels(faces_dir: Path = FACES_DIR) -> list[Face]:
    """Every row of labels.csv, in file order."""
    return [Face(row.file, row.source, row.gender == "male", row.age) for row in read_label_rows(faces_dir / "labels.csv")]


def sample_faces(faces: Sequence[Face], per_source: int, seed: int = 0) -> list[Face]:
    """A fixed random sample of `per_source` faces from each source, sources in name order.

    Each source gets its own generator seeded with `seed`, so one source's sample does
    not change when another source's size does.
    """
    picked: list[Face] = []
    for source in sorted({f.source for f in faces}):
        pool = [f for f in faces if f.source == source]
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(pool), size=min(per_source, len(pool)), replace=False)
        picked.extend(pool[i] for i in sorted(idx))
    return picked


def load_image(face: Face, faces_dir: Path = FACES_DIR) -> np.ndarray:
    """The image as OpenCV gives it: uint8 BGR, HxWx3."""
    image = cv2.imread(str(faces_dir / face.file), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read {faces_dir / face.file}")
    return image


def preprocess(images_bgr: Sequence[np.ndarray], meta: ModelMetadata) -> np.ndarray:
    """Resize whole images to the model's input and normalise them as `meta` says.

    The runtime receives BGR frames from OpenCV, so BGR uint8 is the starting point here
    too; the rest is the live model's own preprocessing.
    """
    size = meta.input_size
    # INTER_AREA when shrinking avoids aliasing; it equals bilinear when enlarging
    resized = [
        cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR)
        for image in images_bgr
    ]
    return preprocess_crops(np.stack(resized) if resized else np.zeros((0, size, size, 3), np.uint8), meta)


def batches(
    faces: Sequence[Face], meta: ModelMetadata, batch_size: int = 32, faces_dir: Path = FACES_DIR
) -> Iterator[np.ndarray]:
    """Preprocessed input batches for `faces`, in order."""
    for start in range(0, len(faces), batch_size):
        chunk = faces[start : start + batch_size]
        yield preprocess([load_image(f, faces_dir) for f in chunk], meta)


@dataclass(frozen=True)
class SourceMetrics:
    n: int
    gender_accuracy: float
    n_age: int  # faces with a usable age label
    age_mae: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "gender_accuracy": round(self.gender_accuracy, 4),
            "n_age": self.n_age,
            "age_mae": round(self.age_mae, 3),
        }


def evaluate(
    runner: Runner, faces: Sequence[Face], meta: ModelMetadata, batch_size: int = 32, faces_dir: Path = FACES_DIR
) -> dict[str, SourceMetrics]:
    """Gender accuracy (decision at P(male) > 0.5) and age MAE for each source."""
    p_parts, age_parts = [], []
    for batch in batches(faces, meta, batch_size, faces_dir):
        p, age = decode_outputs(runner(batch), meta)
        p_parts.append(p)
        age_parts.append(age)
    p_male, age = np.concatenate(p_parts), np.concatenate(age_parts)
    result = {}
    for source in sorted({f.source for f in faces}):
        idx = [i for i, f in enumerate(faces) if f.source == source]
        truth = np.array([faces[i].male for i in idx])
        aged = [i for i in idx if faces[i].age is not None]
        errors = np.abs(age[aged] - np.array([faces[i].age for i in aged], dtype=np.float64))
        result[source] = SourceMetrics(
            n=len(idx),
            gender_accuracy=float(np.mean((p_male[idx] > 0.5) == truth)),
            n_age=len(aged),
            age_mae=float(np.mean(errors)) if aged else float("nan"),
        )
    return result
