"""The train/validation split: deterministic by seed, stratified by source, gender and age decade.

    python -m training.splits --labels ../shared/data/faces/labels.csv [--seed 0] [--val-fraction 0.2]

Identity is unknown in this data (one person may appear twice), so the split is
stratified rather than grouped. Within each stratum (source x gender x age decade,
unknown ages forming their own decade) files are ranked by a hash of the seed and the
file name, and the first `round(fraction * n)` are validation. That depends on nothing
but the file names, the labels and the seed: not on row order, not on numpy's random
generator, and adding files to the data leaves earlier files where they were, nearly.

The split is recomputed identically every time; `write_split` also saves it as a CSV
under cache/splits/ for inspection and for tools outside Python. The validation split
is never used for fitting or hyperparameter search (training.heads).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from training.labels import DEFAULT_LABELS, Labels, load_labels

DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2
SPLIT_DIR = Path("cache/splits")


def age_decade(age: np.ndarray) -> np.ndarray:
    """'0'..'9' (90 and over in '9'), 'unknown' for NaN."""
    out = np.full(len(age), "unknown", dtype=object)
    known = ~np.isnan(age)
    out[known] = np.minimum(age[known] // 10, 9).astype(int).astype(str)
    return out.astype(str)


def decade_label(decade: str) -> str:
    return "unknown" if decade == "unknown" else ("90+" if decade == "9" else f"{int(decade) * 10}-{int(decade) * 10 + 9}")


def strata(labels: Labels) -> np.ndarray:
    gender = np.where(labels.male, "male", "female")
    return np.char.add(np.char.add(np.char.add(np.char.add(labels.source.astype(str), "/"), gender), "/"), age_decade(labels.age))


def rank_key(seed: int, file: str) -> str:
    return hashlib.sha256(f"{seed}:{file}".encode()).hexdigest()


def validation_mask(labels: Labels, seed: int = DEFAULT_SEED, fraction: float = DEFAULT_VAL_FRACTION) -> np.ndarray:
    """True for the validation rows of `labels`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    keys = strata(labels)
    mask = np.zeros(len(labels), bool)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        ranked = sorted(rows, key=lambda i: rank_key(seed, str(labels.file[i])))
        n_val = int(round(fraction * len(rows)))
        mask[ranked[:n_val]] = True
    return mask


def split_path(seed: int, fraction: float, directory: Path = SPLIT_DIR) -> Path:
    return directory / f"split_seed{seed}_val{fraction:g}.csv"


def write_split(labels: Labels, mask: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "split"])
        for file, val in zip(labels.file, mask):
            writer.writerow([file, "val" if val else "train"])
    return path


def split_for_files(files: np.ndarray, labels: Labels, seed: int = DEFAULT_SEED, fraction: float = DEFAULT_VAL_FRACTION) -> np.ndarray:
    """Validation mask for `files` (any subset, any order), computed on the whole labels.csv
    so that a subset's split is the full split restricted to it."""
    mask = validation_mask(labels, seed, fraction)
    position = {f: i for i, f in enumerate(labels.file)}
    return np.array([mask[position[f]] for f in files], dtype=bool)


def summary(labels: Labels, mask: np.ndarray) -> dict:
    out: dict = {"train": int((~mask).sum()), "val": int(mask.sum()), "by_source": {}}
    for source in np.unique(labels.source):
        s = labels.source == source
        out["by_source"][str(source)] = {"train": int((s & ~mask).sum()), "val": int((s & mask).sum())}
    keys = strata(labels)
    counts = Counter(zip(keys.tolist(), mask.tolist()))
    out["strata"] = {k: {"train": counts[(k, False)], "val": counts[(k, True)]} for k in sorted(set(keys.tolist()))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (default: cache/splits/split_seed<S>_val<F>.csv)")
    args = parser.parse_args(argv)
    labels = load_labels(args.labels)
    mask = validation_mask(labels, args.seed, args.val_fraction)
    path = write_split(labels, mask, args.out or split_path(args.seed, args.val_fraction))
    print(json.dumps({"csv": str(path), **summary(labels, mask)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
