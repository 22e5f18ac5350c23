"""labels.csv of shared/data/faces as numpy arrays (no pandas in the environment).

Ages below 1 or above 100 are impossible labels (shared/data/README.md) and become
NaN, as do missing ones: such faces still count for gender, never for age.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.paths import SHARED_DATA

FACES_DIR = SHARED_DATA / "faces"
DEFAULT_LABELS = FACES_DIR / "labels.csv"
MIN_AGE, MAX_AGE = 1, 100


@dataclass(frozen=True)
class Labels:
    root: Path  # folder the `file` paths are relative to
    file: np.ndarray  # str
    male: np.ndarray  # bool
    age: np.ndarray  # float, NaN = unknown
    race: np.ndarray  # str, "" where the source has none
    source: np.ndarray  # str
    orig_px: np.ndarray  # int

    def __len__(self) -> int:
        return len(self.file)

    def subset(self, index: np.ndarray) -> "Labels":
        return Labels(
            self.root,
            self.file[index],
            self.male[index],
            self.age[index],
            self.race[index],
            self.source[index],
            self.orig_px[index],
        )

    def align(self, files: np.ndarray) -> "Labels":
        """Rows in the order of `files`; every file must be labelled."""
        position = {f: i for i, f in enumerate(self.file)}
        missing = [f for f in files if f not in position]
        if missing:
            raise KeyError(f"{len(missing)} files have no label, e.g. {missing[0]}")
        return self.subset(np.array([position[f] for f in files], dtype=np.int64))

    def path(self, i: int) -> Path:
        return self.root / self.file[i]


def load_labels(path: str | Path = DEFAULT_LABELS) -> Labels:
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows")
    for column in ("file", "gender", "age", "source"):
        if column not in rows[0]:
            raise ValueError(f"{path} lacks the column {column!r}")
    age = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        text = (row.get("age") or "").strip()
        if text:
            value = float(text)
            if MIN_AGE <= value <= MAX_AGE:
                age[i] = value
    genders = {row["gender"] for row in rows}
    if not genders <= {"male", "female"}:
        raise ValueError(f"{path}: unexpected gender labels {sorted(genders - {'male', 'female'})}")
    return Labels(
        root=path.parent,
        file=np.array([row["file"] for row in rows]),
        male=np.array([row["gender"] == "male" for row in rows]),
        age=age,
        race=np.array([(row.get("race") or "").strip() for row in rows]),
        source=np.array([row["source"] for row in rows]),
        orig_px=np.array([int(row.get("orig_px") or 0) for row in rows]),
    )
