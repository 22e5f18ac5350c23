"""Contact sheets of a model's worst mistakes, for reviewing the labels by eye.

    python -m training.evaluate --data ../shared/data/faces --split val --predictions cache/val.csv
    python -m tooling.error_sheet cache/val.csv --kind gender --source utkface --min-age 10 --out cache/utk-gender.png

A confident mistake is either the model's or the label's: the model card's account of
why the accuracy targets are missed rests on telling them apart. This draws the faces
the model got most confidently wrong (gender: the surest wrong answers; age: the
largest errors), each with its label and the prediction, numbered in order, and prints
the same order as `index,file,label,prediction` so that a reviewer's verdicts can be
written down by file name. The sheet holds the data sets' images: keep it out of the
repository (`cache/` is ignored).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from realtime.cli import positive_int

KINDS = ("gender", "age")
TILE = 160


@dataclass(frozen=True)
class Mistake:
    file: str
    label: str  # "f 26" or "age 82"
    prediction: str  # "p=1.00" (P(male)) or "age 30"
    severity: float  # confidence of the wrong gender, or years off


def read_predictions(path: Path) -> list[dict[str, str]]:
    """The rows of training.evaluate's --predictions CSV."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"file", "source", "gender", "age", "p_male", "age_pred"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"not a predictions file of training.evaluate (no column {sorted(missing)[0]})")
    return rows


def gender_mistakes(rows: list[dict[str, str]], min_confidence: float) -> list[Mistake]:
    out = []
    for r in rows:
        if r["gender"] not in ("male", "female"):
            continue
        p = float(r["p_male"])
        if (p >= 0.5) != (r["gender"] == "male") and max(p, 1 - p) >= min_confidence:
            out.append(Mistake(r["file"], f"{r['gender'][0]} {r['age']}", f"p={p:.2f}", max(p, 1 - p)))
    return sorted(out, key=lambda m: -m.severity)


def age_mistakes(rows: list[dict[str, str]], min_years: float) -> list[Mistake]:
    out = []
    for r in rows:
        if not r["age"]:
            continue
        off = abs(float(r["age_pred"]) - float(r["age"]))
        if off >= min_years:
            out.append(Mistake(r["file"], f"age {r['age']}", f"age {float(r['age_pred']):.0f}", off))
    return sorted(out, key=lambda m: -m.severity)


def select_rows(rows: list[dict[str, str]], source: str | None, min_age: int | None) -> list[dict[str, str]]:
    def keep(r: dict[str, str]) -> bool:
        if source is not None and r["source"] != source:
            return False
        return min_age is None or (r["age"] != "" and int(float(r["age"])) >= min_age)

    return [r for r in rows if keep(r)]


def tile(mistake: Mistake, index: int) -> np.ndarray:
    """The face at TILE px with its number, label and prediction written on it; the file
    is found as the evaluation wrote it (relative to where it ran, or absolute)."""
    image = cv2.imread(mistake.file, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read {mistake.file}")
    image = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    for text, y in ((str(index), 14), (f"{mistake.label} / {mistake.prediction}", TILE - 6)):
        cv2.putText(image, text, (3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(image, text, (3, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
    return image


def contact_sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    blank = np.zeros((TILE, TILE, 3), np.uint8)
    padded = tiles + [blank] * (-len(tiles) % columns)
    return np.vstack([np.hstack(padded[i : i + columns]) for i in range(0, len(padded), columns)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.error_sheet", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", type=Path, help="CSV written by training.evaluate --predictions")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write (refused if it exists)")
    parser.add_argument("--kind", choices=KINDS, default="gender")
    parser.add_argument("--source", default=None, help="only faces of this source")
    parser.add_argument("--min-age", type=int, default=None, help="only faces labelled this age or older")
    parser.add_argument("--min-confidence", type=float, default=0.9, help="gender: only wrong answers at least this sure")
    parser.add_argument("--min-years", type=float, default=15.0, help="age: only errors of at least this many years")
    parser.add_argument("--limit", type=positive_int, default=40)
    parser.add_argument("--columns", type=positive_int, default=8)
    args = parser.parse_args(argv)
    if not args.predictions.is_file():
        parser.exit(2, f"predictions file not found: {args.predictions}\n")
    if args.out.exists():
        parser.exit(2, f"{args.out} exists: choose another --out (it is never overwritten)\n")
    try:
        rows = select_rows(read_predictions(args.predictions), args.source, args.min_age)
    except ValueError as exc:
        parser.exit(2, f"{args.predictions}: {exc}\n")
    found = gender_mistakes(rows, args.min_confidence) if args.kind == "gender" else age_mistakes(rows, args.min_years)
    if not found:
        parser.exit(1, f"no {args.kind} mistakes among {len(rows)} faces at these thresholds\n")
    shown = found[: args.limit]
    try:
        tiles = [tile(m, i) for i, m in enumerate(shown)]
    except OSError as exc:  # an image moved since the evaluation, or it ran elsewhere
        parser.exit(2, f"{exc} (run from where training.evaluate ran)\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), contact_sheet(tiles, args.columns)):
        parser.exit(2, f"cannot write {args.out}\n")
    print(f"# {len(found)} {args.kind} mistakes among {len(rows)} faces; the first {len(shown)} in {args.out}")
    print("index,file,label,prediction")
    for i, m in enumerate(shown):
        print(f"{i},{m.file},{m.label},{m.prediction}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
