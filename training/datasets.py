"""Face datasets on disk to one record type, and train/validation splits.

Every layout the project meets is read by an adapter into `FaceRecord`s, so training and
evaluation never care where a face came from:

    shared      a folder with labels.csv (file, gender, age, race, source[, identity])
                and the images, as ../shared/data/faces
    imdb-wiki   IMDB-WIKI's wiki.mat / imdb.mat beside its image folders
    afad        AFAD: <age>/<111|112>/*.jpg (111 male, 112 female)
    utkface     UTKFace: age_gender_race_date*.jpg (gender 0 male, 1 female;
                race 0 white, 1 black, 2 asian, 3 indian, 4 other)
    prototype   the first prototype's male/ and female/ folders of id_name_gender_age.jpg

Labels the sources get wrong in a known way are normalised here: ages below 1 or above
100 are unknown (None), genders are 'male'/'female'/None. Files that cannot be parsed
are skipped and counted in `Dataset.skipped`, never silently.

`split_records` holds out a validation fraction so that no identity is on both sides
(the same person in train and validation would flatter the validation score), stratified
by source, gender and age decade, deterministically for a seed.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, NamedTuple, Sequence

import numpy as np

from realtime.errors import UserError
from training.labels import LabelsError, parse_age, parse_gender, read_label_rows, valid_age

Kind = Literal["auto", "shared", "imdb-wiki", "afad", "utkface", "prototype"]
KINDS: tuple[str, ...] = ("auto", "shared", "imdb-wiki", "afad", "utkface", "prototype")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
UTK_RACES = ("white", "black", "asian", "indian", "other")
AFAD_GENDERS = {"111": "male", "112": "female"}


class DatasetError(UserError):
    """A dataset folder or label file that cannot be read."""


@dataclass(frozen=True)
class FaceRecord:
    path: Path
    gender: str | None  # 'male', 'female' or None when unknown
    age: int | None  # years, None when unknown or impossible
    race: str | None
    source: str
    identity: str | None  # the person, where the source names them


@dataclass
class Dataset:
    """The records an adapter read, and what it skipped (reason -> count)."""

    kind: str
    root: Path
    records: list[FaceRecord]
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if is_image(p))


# --- shared layout -------------------------------------------------------------------

def read_shared(root: str | Path, labels: str = "labels.csv") -> Dataset:
    """A folder with labels.csv; `file` is relative to the folder (or absolute)."""
    root = Path(root)
    csv_path = root / labels
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    if not csv_path.is_file():
        raise DatasetError(f"no {labels} in {root}")
    try:
        rows = read_label_rows(csv_path)
    except LabelsError as exc:
        raise DatasetError(str(exc)) from None
    records, skipped = [], Counter()
    for row in rows:
        if not row.file:
            skipped["no_file"] += 1
            continue
        records.append(
            FaceRecord(
                path=root / row.file,
                gender=row.gender,
                age=row.age,
                race=row.race.lower() or None,
                source=row.source or root.name,
                identity=row.identity,
            )
        )
    return Dataset("shared", root, records, skipped)


# --- IMDB-WIKI -----------------------------------------------------------------------

MATLAB_TO_ORDINAL = 366  # MATLAB's datenum counts from year 0 (a leap year), Python's from year 1


def matlab_datenum_to_date(datenum: float) -> dt.date | None:
    if datenum is None or not math.isfinite(datenum):
        return None
    ordinal = int(datenum) - MATLAB_TO_ORDINAL
    if ordinal < 1 or ordinal > dt.date.max.toordinal():
        return None
    return dt.date.fromordinal(ordinal)


def age_at_photo(dob_datenum: float, photo_taken: float) -> int | None:
    """Age on July 1 of the year the photo was taken, as the IMDB-WIKI authors assumed
    (the photos carry only a year); None when impossible."""
    birth = matlab_datenum_to_date(dob_datenum)
    if birth is None or photo_taken is None or not math.isfinite(float(photo_taken)):
        return None
    year = int(photo_taken)
    age = year - birth.year - (1 if (birth.month, birth.day) > (7, 1) else 0)
    return valid_age(age)


def _mat_text(cell: object) -> str:
    """One string out of a MATLAB cell entry as scipy returns it."""
    while isinstance(cell, np.ndarray):
        if cell.size == 0:
            return ""
        if cell.dtype.kind in "US" and cell.ndim > 0 and cell.size > 1 and cell.dtype.itemsize <= 4:
            return "".join(str(c) for c in cell.flat)  # a char array
        cell = cell.flat[0]
    return "" if cell is None else str(cell).strip()


def imdb_wiki_struct(path: Path) -> tuple[Path, str, np.ndarray]:
    """(the .mat file, its struct's name, the struct) of wiki.mat / imdb.mat or a folder holding one."""
    import scipy.io

    if path.is_dir():
        found = [path / n for n in ("wiki.mat", "imdb.mat") if (path / n).is_file()]
        if not found:
            raise DatasetError(f"no wiki.mat or imdb.mat in {path}")
        path = found[0]
    if not path.is_file():
        raise DatasetError(f"IMDB-WIKI file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise DatasetError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    keys = [k for k in mat if not k.startswith("__")]
    key = next((k for k in ("wiki", "imdb") if k in mat), keys[0] if len(keys) == 1 else None)
    if key is None:
        raise DatasetError(f"{path} holds no 'wiki' or 'imdb' struct (found {', '.join(keys) or 'nothing'})")
    struct = mat[key]
    if struct.dtype.names is None:
        raise DatasetError(f"{path}: '{key}' is not a struct")
    return path, key, struct.reshape(-1)[0]


def imdb_wiki_columns(path: Path, key: str, struct: np.ndarray) -> dict[str, np.ndarray | None]:
    """The struct's fields as flat arrays (None for a missing optional one), lengths checked."""

    def column(name: str, required: bool = True) -> np.ndarray | None:
        if name not in struct.dtype.names:
            if required:
                raise DatasetError(f"{path}: struct '{key}' lacks the field {name}")
            return None
        return np.asarray(struct[name]).reshape(-1)

    columns = {name: column(name) for name in ("dob", "photo_taken", "full_path", "gender")}
    columns.update({name: column(name, required=False) for name in ("name", "face_score", "second_face_score")})
    n = len(columns["full_path"])
    for name in ("dob", "photo_taken", "gender"):
        if len(columns[name]) != n:
            raise DatasetError(f"{path}: field {name} has {len(columns[name])} entries, full_path {n}")
    return columns


def imdb_wiki_skip_reason(columns: dict[str, np.ndarray | None], i: int, min_face_score: float | None, drop_second_face: bool) -> str | None:
    face_score, second = columns["face_score"], columns["second_face_score"]
    if min_face_score is not None and face_score is not None and not float(face_score[i]) >= min_face_score:
        return "low_face_score"  # also -inf and NaN
    if drop_second_face and second is not None and not math.isnan(float(second[i])):
        return "second_face"
    if not _mat_text(columns["full_path"][i]):
        return "no_path"
    return None


def imdb_wiki_record(columns: dict[str, np.ndarray | None], i: int, root: Path, source: str) -> FaceRecord:
    g = float(columns["gender"][i])
    names = columns["name"]
    identity = _mat_text(names[i]) if names is not None else ""
    return FaceRecord(
        path=root / _mat_text(columns["full_path"][i]),
        gender=None if math.isnan(g) else ("male" if g == 1.0 else "female" if g == 0.0 else None),
        age=age_at_photo(float(columns["dob"][i]), float(columns["photo_taken"][i])),
        race=None,
        source=source,
        identity=identity or None,
    )


def read_imdb_wiki(
    path: str | Path,
    min_face_score: float | None = 1.0,
    drop_second_face: bool = True,
    image_root: str | Path | None = None,
) -> Dataset:
    """wiki.mat or imdb.mat (or a folder holding one); images relative to its folder.

    `min_face_score`: drop entries whose detector score is below it (the authors' score;
    -inf means no face was found); None keeps all. `drop_second_face`: drop images where
    the authors' detector saw a second face (second_face_score not NaN), since the label
    may belong to either.
    """
    path, key, struct = imdb_wiki_struct(Path(path))
    columns = imdb_wiki_columns(path, key, struct)
    root = Path(image_root) if image_root is not None else path.parent
    records, skipped = [], Counter()
    for i in range(len(columns["full_path"])):
        reason = imdb_wiki_skip_reason(columns, i, min_face_score, drop_second_face)
        if reason:
            skipped[reason] += 1
        else:
            records.append(imdb_wiki_record(columns, i, root, key))
    return Dataset("imdb-wiki", root, records, skipped)


# --- AFAD ----------------------------------------------------------------------------


def read_afad(root: str | Path) -> Dataset:
    """AFAD (Full or Lite): <age>/<111|112>/*.jpg."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"AFAD folder not found: {root}")
    records, skipped = [], Counter()
    for age_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not age_dir.name.isdigit():
            skipped["not_an_age_folder"] += 1
            continue
        age = valid_age(int(age_dir.name))
        for gender_dir in sorted(p for p in age_dir.iterdir() if p.is_dir()):
            gender = AFAD_GENDERS.get(gender_dir.name)
            if gender is None:
                skipped["unknown_gender_folder"] += 1
                continue
            for image in image_files(gender_dir):
                records.append(FaceRecord(image, gender, age, None, "afad", None))
    return Dataset("afad", root, records, skipped)


# --- UTKFace -------------------------------------------------------------------------

UTK_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)")


def parse_utkface_name(name: str) -> tuple[int | None, str, str] | str:
    """(age, gender, race) from a UTKFace file name, or the reason it is malformed."""
    match = UTK_NAME.match(name)
    if match is None:
        return "malformed_name"
    age, gender, race = (int(g) for g in match.groups()[:3])
    if gender not in (0, 1):
        return "bad_gender"
    if race >= len(UTK_RACES):
        return "bad_race"
    return valid_age(age), ("male" if gender == 0 else "female"), UTK_RACES[race]


def read_utkface(root: str | Path) -> Dataset:
    """UTKFace: age_gender_race_date*.jpg anywhere under root (part1/, part2/ ... too)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"UTKFace folder not found: {root}")
    records, skipped = [], Counter()
    for image in image_files(root):
        parsed = parse_utkface_name(image.name)
        if isinstance(parsed, str):
            skipped[parsed] += 1
            continue
        age, gender, race = parsed
        records.append(FaceRecord(image, gender, age, race, "utkface", None))
    return Dataset("utkface", root, records, skipped)


# --- the first prototype's folders ----------------------------------------------------


def read_prototype(root: str | Path) -> Dataset:
    """male/ and female/ folders of id_name_gender_age.jpg; the folder is the gender.

    The name may contain underscores (everything between the id and the last two
    fields). A gender word in the file name (male/female/m/f) that contradicts the
    folder marks the file as ambiguous and skips it; numeric codes are not interpreted.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"prototype folder not found: {root}")
    records, skipped = [], Counter()
    for folder in ("male", "female"):
        directory = root / folder
        if not directory.is_dir():
            continue
        for image in image_files(directory):
            parts = image.name[: -len(image.suffix)].split("_")
            if len(parts) < 4:
                skipped["malformed_name"] += 1
                continue
            word = parse_gender(parts[-2])
            if word is not None and word != folder:
                skipped["gender_mismatch"] += 1
                continue
            name = "_".join(parts[1:-2]).strip()
            records.append(FaceRecord(image, folder, parse_age(parts[-1]), None, "prototype", name or None))
    if not records and not skipped:
        raise DatasetError(f"no images under {root}/male or {root}/female")
    return Dataset("prototype", root, records, skipped)


# --- detection -----------------------------------------------------------------------


def detect_kind(path: str | Path) -> str:
    """Which layout a path holds, from its structure alone."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".mat":
            return "imdb-wiki"
        if path.name.lower().endswith(".csv"):
            return "shared"
        raise DatasetError(f"cannot tell which dataset {path} is: expected a folder, labels.csv or a .mat file")
    if not path.is_dir():
        raise DatasetError(f"dataset not found: {path}")
    if (path / "labels.csv").is_file():
        return "shared"
    if (path / "wiki.mat").is_file() or (path / "imdb.mat").is_file():
        return "imdb-wiki"
    if (path / "male").is_dir() and (path / "female").is_dir():
        return "prototype"
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    if any(p.name.isdigit() and any((p / g).is_dir() for g in AFAD_GENDERS) for p in subdirs):
        return "afad"
    for i, image in enumerate(p for p in path.rglob("*") if is_image(p)):
        if not isinstance(parse_utkface_name(image.name), str):
            return "utkface"
        if i >= 50:
            break
    raise DatasetError(
        f"cannot tell which dataset layout {path} holds (looked for labels.csv, wiki.mat/imdb.mat, "
        "male/ + female/, AFAD <age>/111|112/, UTKFace file names); pass the kind explicitly"
    )


def load_dataset(path: str | Path, kind: str = "auto", **options: object) -> Dataset:
    """Read any supported layout; `options` go to the adapter (e.g. min_face_score)."""
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}: choose one of {', '.join(KINDS)}")
    path = Path(path)
    if kind == "auto":
        kind = detect_kind(path)
    if kind == "shared":
        if path.is_file():
            return read_shared(path.parent, path.name, **options)  # type: ignore[arg-type]
        return read_shared(path, **options)  # type: ignore[arg-type]
    readers = {"imdb-wiki": read_imdb_wiki, "afad": read_afad, "utkface": read_utkface, "prototype": read_prototype}
    return readers[kind](path, **options)  # type: ignore[operator]


# --- splits --------------------------------------------------------------------------


class Split(NamedTuple):
    train: list[FaceRecord]
    val: list[FaceRecord]


def age_decade(age: int | None) -> int:
    return -1 if age is None else min(age // 10, 10)


def stratum(record: FaceRecord) -> tuple[str, str, int]:
    return (record.source, record.gender or "", age_decade(record.age))


def split_records(records: Sequence[FaceRecord] | Iterable[FaceRecord], val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Hold out about `val_fraction` of the records for validation.

    Records of a known identity move together (identity is namespaced by nothing: the
    same name in two sources is taken to be the same person). Units (an identity's
    records, or one record without identity) are grouped by stratum (source, gender,
    age decade; an identity's most common one), shuffled by the seed within each, and
    walked in order, each going to validation when that brings the running validation
    count closer to `val_fraction` of the running total, so every stratum is held out in
    proportion. The result depends on the seed and the set of records, not their order;
    each split keeps the input order.
    """
    records = list(records)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    units: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        key = ("id", record.identity) if record.identity else ("file", str(record.path))
        units[key].append(i)
    by_stratum: dict[tuple[str, str, int], list[tuple[str, str]]] = defaultdict(list)
    for key, members in units.items():
        counts = Counter(stratum(records[i]) for i in members)
        best = max(counts.values())
        by_stratum[min(s for s, c in counts.items() if c == best)].append(key)
    rng = random.Random(seed)
    in_val = [False] * len(records)
    total = val = 0
    for s in sorted(by_stratum):
        keys = sorted(by_stratum[s])
        rng.shuffle(keys)
        for key in keys:
            size = len(units[key])
            total += size
            target = val_fraction * total
            if abs(val + size - target) < abs(val - target):
                val += size
                for i in units[key]:
                    in_val[i] = True
    return Split(
        train=[r for r, v in zip(records, in_val) if not v],
        val=[r for r, v in zip(records, in_val) if v],
    )
