"""labels.csv, the one reader: typed rows for every consumer, and the rows as numpy
arrays for training (no pandas in the environment).

labels.csv has the columns file, gender, age and, where known, race, source, orig_px and
identity (shared/data/README.md). Ages that are not a whole number of years from 1 to 100
are impossible labels and become unknown (None, NaN in arrays), as do missing ones: such
faces still count for gender, never for age. Genders are normalised to "male" / "female"
(m, man, f, woman ... accepted), None when unknown.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from realtime.errors import UserError
from realtime.paths import SHARED_DATA

FACES_DIR = SHARED_DATA / "faces"
DEFAULT_LABELS = FACES_DIR / "labels.csv"
MIN_AGE, MAX_AGE = 1, 100
GENDER_WORDS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}
REQUIRED_COLUMNS = ("file", "gender", "age")


class LabelsError(UserError, ValueError):
    """A labels file that cannot be read or lacks a column."""


def valid_age(age: float | int | None) -> int | None:
    """An age in years if it is possible (1..100), else None."""
    if age is None:
        return None
    try:
        value = float(age)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    value = int(value)
    return value if MIN_AGE <= value <= MAX_AGE else None


def parse_age(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return valid_age(float(text))
    except ValueError:
        return None


def parse_gender(text: str | None) -> str | None:
    return GENDER_WORDS.get((text or "").strip().lower())


def _count(text: str | None) -> int:
    try:
        return int((text or "").strip() or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class LabelRow:
    """One row of labels.csv, each field parsed; unknowns are None or ""."""

    file: str  # as written: relative to the labels file's folder, or absolute
    gender: str | None  # "male", "female" or None
    age: int | None  # years 1..100, None when unknown or impossible
    race: str  # as written, "" where the source has none
    source: str  # "" where the file names none
    orig_px: int  # side of the original image, 0 when unknown
    identity: str | None  # the person, where the file names them


def read_label_rows(path: str | Path, required: Sequence[str] = REQUIRED_COLUMNS) -> list[LabelRow]:
    """Every row of a labels.csv, in file order (LabelsError when unreadable or a column is missing)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise LabelsError(f"{path} lacks the column(s) {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"cannot read {path}: {exc}") from None
    return [
        LabelRow(
            file=(row.get("file") or "").strip(),
            gender=parse_gender(row.get("gender")),
            age=parse_age(row.get("age")),
            race=(row.get("race") or "").strip(),
            source=(row.get("source") or "").strip(),
            orig_px=_count(row.get("orig_px")),
            identity=(row.get("identity") or "").strip() or None,
        )
        for row in rows
    ]


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
    """labels.csv as arrays; every row must name a file, a source and a known gender."""
    path = Path(path)
    rows = read_label_rows(path, REQUIRED_COLUMNS + ("source",))
    if not rows:
        raise LabelsError(f"{path} has no rows")
    unknown = [i for i, row in enumerate(rows) if row.gender is None]
    if unknown:
        raise LabelsError(f"{path}: {len(unknown)} rows have no male/female gender, e.g. data row {unknown[0] + 1}")
    return Labels(
        root=path.parent,
        file=np.array([row.file for row in rows]),
        male=np.array([row.gender == "male" for row in rows]),
        age=np.array([np.nan if row.age is None else float(row.age) for row in rows]),
        race=np.array([row.race for row in rows]),
        source=np.array([row.source for row in rows]),
        orig_px=np.array([row.orig_px for row in rows]),
    )
