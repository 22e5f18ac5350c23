"""Fit the gender calibration of fitted heads (see `realtime.calibration`).

    python -m training.calibrate --heads cache/heads/deep_flip \\
        --features cache/features/faceres_deep_flip.npz --labels ../shared/data/faces/labels.csv

The heads' own predictions on the faces they were fitted on are too sure (the trees
have seen those labels), so the calibration is fitted on out-of-fold predictions: the
gender booster is refitted k times with the heads' hyperparameters and round count,
each time without one fold, and predicts that fold. The map's age is the heads' age
estimate (in-sample: the age decides only which knots weigh, and in-sample ages are
close to what serving sees). The map is a logistic regression of the label on the raw
logit weighted by the face's age knots (`hat_basis`), so every knot gets its own
slope, interpolated between knots. Offsets (`--offsets`) are left out by default: on
the validation faces they moved a few labels for no gain, and without them the map
only says how sure the model's own label is.

Writes `<heads>/calibration.json`: the calibration, its measures before and after on
the out-of-fold training faces and on the validation faces (which it never saw), and
what an "uncertain" threshold would show per age decade. `export.lightgbm` stamps the
calibration into the fused model's metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.calibration import GenderCalibration, calibrate_p_male, hat_basis, logit
from training.heads import Dataset, Heads, load_dataset, make_tasks, missing_fit, predict_task
from training.labels import DEFAULT_LABELS, Labels, load_labels
from training.metrics import abstention, age_decades, calibration, decade_label
from training.splits import split_for_files

CALIBRATION_JSON = "calibration.json"
# children's and old faces are where the raw probability is least honest, so knots are
# dense there; two parameters per knot on ~30,000 faces
DEFAULT_KNOTS: tuple[float, ...] = (2.0, 6.0, 12.0, 18.0, 30.0, 50.0, 75.0)
THRESHOLDS: tuple[float, ...] = (0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class CalibrateOptions:
    heads: Path
    features: Path
    labels: Path = DEFAULT_LABELS
    knots: tuple[float, ...] = DEFAULT_KNOTS
    folds: int = 5
    seed: int = 0
    threads: int = 0
    offsets: bool = False  # also fit per-knot offsets, which can change a face's label


def fit_map(p_male: np.ndarray, age: np.ndarray, male: np.ndarray, knots: tuple[float, ...], fitted_on: str,
            offsets: bool = False) -> GenderCalibration:
    """Per-knot slopes (and with `offsets` per-knot offsets) maximising the likelihood of
    the labels, unpenalised. Without offsets the map only rescales the logit, so the
    calibrated label is always the model's own: calibration changes how sure, not what."""
    from sklearn.linear_model import LogisticRegression

    basis = hat_basis(age, knots)
    design = basis * logit(p_male)[:, None]
    if offsets:
        design = np.concatenate([design, basis], axis=1)
    model = LogisticRegression(C=np.inf, fit_intercept=False, max_iter=2000)  # unpenalised
    model.fit(design, np.asarray(male, bool))
    coef = model.coef_[0]
    k = len(knots)
    offset = coef[k:] if offsets else np.zeros(k)
    return GenderCalibration(
        tuple(float(round(v, 6)) for v in knots),
        tuple(float(round(v, 6)) for v in coef[:k]),
        tuple(float(round(v, 6)) + 0.0 for v in offset),
        fitted_on,
    )


def out_of_fold_p_male(heads: Heads, ds: Dataset, rows: np.ndarray, options: CalibrateOptions) -> np.ndarray:
    """Each of `rows`' P(male) from the gender booster refitted without its fold."""
    cfg = heads.refit_config(options.folds, options.threads, options.seed)
    gender, _, _ = make_tasks(ds, cfg, rows)
    folds = gender.fold_ids(options.folds)
    oof = np.full(len(rows), np.nan)
    for fold in range(options.folds):
        held = np.flatnonzero(folds == fold)
        booster = heads.refit(gender, cfg, np.flatnonzero(folds != fold))
        oof[held] = predict_task("gender", booster, gender.X[held], gender.init_score_of(held))
    return oof


def measures(male: np.ndarray, p_male: np.ndarray) -> dict[str, Any]:
    c = calibration(male, p_male)
    return {"n": c["n"], "ece": c["ece"], "mce": c["mce"], "brier": c["brier"], "accuracy": c["accuracy"]}


def decade_masks(labels: Labels) -> dict[str, np.ndarray]:
    """The faces of each decade of labelled age ("0-9", ...), unknown ages in none."""
    known = ~np.isnan(labels.age)
    decades = np.where(known, age_decades(np.where(known, labels.age, 0)), -1)
    return {decade_label(int(d)): decades == d for d in sorted(set(decades[known].tolist()))}


def decade_measures(labels: Labels, raw: np.ndarray, calibrated: np.ndarray) -> dict[str, dict[str, Any]]:
    """Calibration before and after, per decade of labelled age."""
    return {
        name: {"raw": measures(labels.male[m], raw[m]), "calibrated": measures(labels.male[m], calibrated[m])}
        for name, m in decade_masks(labels).items()
    }


def uncertain_table(labels: Labels, p_male: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per threshold and age decade: the share shown, and shown with a wrong gender."""
    masks = decade_masks(labels)
    return {
        f"{t:.2f}": {"all": abstention(labels.male, p_male, t)}
        | {name: abstention(labels.male[m], p_male[m], t) for name, m in masks.items()}
        for t in THRESHOLDS
    }


def calibrate(options: CalibrateOptions, log=print) -> dict[str, Any]:
    heads = Heads.load(options.heads)
    ds = load_dataset(options.features, options.labels, heads.record.features_key)
    if not heads.record.split.used:
        raise SystemExit("the heads were fitted on every face; calibration needs heads fitted with --split")
    val = split_for_files(ds.files, load_labels(options.labels), heads.record.split.seed, heads.record.split.val_fraction)
    train_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
    train_lab, val_lab = ds.labels.subset(train_rows), ds.labels.subset(val_rows)
    log(f"out-of-fold predictions of {len(train_rows)} training faces ({options.folds} folds)")
    oof = out_of_fold_p_male(heads, ds, train_rows, options)
    _, train_age = heads.predict(ds.X[train_rows])
    fitted_on = (f"{options.folds}-fold out-of-fold P(male) of the {len(train_rows)} training-split faces of "
                 f"{options.heads}, by the heads' age estimate")
    cal = fit_map(oof, train_age, train_lab.male, options.knots, fitted_on, options.offsets)
    val_p, val_age = heads.predict(ds.X[val_rows])
    val_cal = calibrate_p_male(val_p, val_age, cal)
    result = {
        "calibration": cal.to_dict(),
        "train_out_of_fold": {"raw": measures(train_lab.male, oof), "calibrated": measures(train_lab.male, calibrate_p_male(oof, train_age, cal))},
        "validation": {"raw": measures(val_lab.male, val_p), "calibrated": measures(val_lab.male, val_cal)},
        "validation_by_source": {
            str(s): {"raw": measures(val_lab.male[m], val_p[m]), "calibrated": measures(val_lab.male[m], val_cal[m])}
            for s in np.unique(val_lab.source) for m in [val_lab.source == s]
        },
        "validation_by_decade": decade_measures(val_lab, val_p, val_cal),
        "validation_uncertain": {"raw": uncertain_table(val_lab, val_p), "calibrated": uncertain_table(val_lab, val_cal)},
        "heads": str(options.heads),
        "features": str(options.features),
    }
    (options.heads / CALIBRATION_JSON).write_text(json.dumps(result, indent=2))
    return result


def load_calibration(heads_dir: Path) -> GenderCalibration | None:
    """The calibration `calibrate` wrote beside the heads, or None."""
    path = Path(heads_dir) / CALIBRATION_JSON
    if not path.is_file():
        return None
    return GenderCalibration.from_dict(json.loads(path.read_text())["calibration"])


def parse_knots(text: str) -> tuple[float, ...]:
    try:
        knots = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ages separated by commas, got {text!r}") from None
    if not knots or any(b <= a for a, b in zip(knots, knots[1:])):
        raise argparse.ArgumentTypeError(f"knots must be increasing ages, got {text!r}")
    return knots


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name in ("train_out_of_fold", "validation"):
        raw, cal = result[name]["raw"], result[name]["calibrated"]
        lines.append(f"{name}: ECE {raw['ece']:.2%} -> {cal['ece']:.2%}, Brier {raw['brier']:.4f} -> {cal['brier']:.4f}")
    for t, rows in result["validation_uncertain"]["calibrated"].items():
        kids = rows.get("0-9", {})
        lines.append(f"threshold {t}: shown {rows['all']['shown_share']:.1%} (ages 0-9 {kids.get('shown_share', 0):.1%}), "
                     f"confidently wrong {rows['all']['confident_wrong_share']:.1%} (ages 0-9 {kids.get('confident_wrong_share', 0):.1%})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=Path, required=True, help="folder written by `python -m training.heads fit --split`")
    parser.add_argument("--features", type=Path, required=True, help="the features the heads were fitted on")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--knots", type=parse_knots, default=DEFAULT_KNOTS, help="ages of the knots, e.g. 2,6,12,18,30,50,75")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--offsets", action="store_true", help="also fit an offset per knot (it can change labels; off by default)")
    args = parser.parse_args(argv)
    problem = missing_fit(args.heads, args.features)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    result = calibrate(CalibrateOptions(args.heads, args.features, args.labels, args.knots, args.folds, threads=args.threads,
                                        offsets=args.offsets))
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
