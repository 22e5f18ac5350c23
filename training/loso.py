"""Leave-one-source-out: how the heads do on a source they were not fitted on.

    python -m training.loso --features cache/features/faceres_deep_flip.npz \\
        --heads cache/heads/deep_flip --out docs/eval-loso

Users' cameras are neither Wikipedia portraits nor UTKFace crops, so a source the heads
never saw is the nearest stand-in for faces from elsewhere. For every source S the
heads are refitted on the training split of S alone, with the hyperparameters and
round counts of `--heads` (no search: the comparison is between training data, not
between searches), and every fit is scored on the validation split of every source.
Beside them: the `--heads` themselves (fitted on all sources) and the backbone's own
pretrained outputs (no fitting at all). The gap for a test source is its score when
fitted on that source alone minus its score when fitted on the other sources alone;
`--heads` shows what pooling both sources gives back.

Writes `<out>/loso.json` and `<out>/report.md`. Scored on the cached features, which
are what the fused model computes from the live detector's crops (`export.lightgbm`
checks that parity).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.backbones import HEAD_FEATURES
from training.heads import Dataset, Heads, column, load_dataset, make_tasks, missing_fit, predict_task, sigmoid
from training.labels import DEFAULT_LABELS, load_labels
from training.metrics import age_metrics, bootstrap_ci, wilson_ci
from training.splits import split_for_files

PRETRAINED = "pretrained backbone (no fitting)"
ALL_SOURCES = "all sources (the heads as shipped)"


@dataclass(frozen=True)
class LosoOptions:
    features: Path
    heads: Path
    out: Path
    labels: Path = DEFAULT_LABELS
    threads: int = 0


def fit_predict(heads: Heads, ds: Dataset, train_rows: np.ndarray, test_rows: np.ndarray, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(male), age) on test_rows from boosters refitted on train_rows with the heads' parameters."""
    cfg = heads.refit_config(folds=2, threads=threads)
    tasks = make_tasks(ds, cfg, train_rows)[:2]
    X = ds.X[test_rows]
    out = []
    for task in tasks:
        booster = heads.refit(task, cfg, np.arange(len(task.y)))
        out.append(predict_task(task.name, booster, X, heads.init_score(task.name, X)))
    return out[0], out[1]


def pretrained_predict(ds: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gl, am = column(ds, HEAD_FEATURES[0]), column(ds, HEAD_FEATURES[1])
    if gl is None or am is None:
        raise SystemExit("the features hold no pretrained outputs (extract them without --no-head-features)")
    return sigmoid(ds.X[rows, gl]), ds.X[rows, am].astype(np.float64)


def cell(male: np.ndarray, age: np.ndarray, p_male: np.ndarray, age_pred: np.ndarray) -> dict[str, Any]:
    correct = (p_male >= 0.5) == male
    known = ~np.isnan(age)
    a = age_metrics(age, age_pred)
    return {
        "n": int(len(male)),
        "gender_accuracy": float(correct.mean()),
        "gender_accuracy_ci": list(wilson_ci(correct) or ()),
        "age_mae": a["mae"],
        "age_mae_ci": list(bootstrap_ci(np.abs(age_pred[known] - age[known])) or ()),
    }


def loso(options: LosoOptions, log=print) -> dict[str, Any]:
    heads = Heads.load(options.heads)
    if not heads.record.split.used:
        raise SystemExit("--heads were fitted on every face; leave-one-source-out needs heads fitted with --split")
    ds = load_dataset(options.features, options.labels, heads.record.features_key)
    split = heads.record.split
    val = split_for_files(ds.files, load_labels(options.labels), split.seed, split.val_fraction)
    sources = sorted(str(s) for s in np.unique(ds.labels.source))
    tests = {s: np.flatnonzero(val & (ds.labels.source == s)) for s in sources}
    test_rows = np.concatenate(list(tests.values()))
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {PRETRAINED: pretrained_predict(ds, test_rows)}
    for s in sources:
        train_rows = np.flatnonzero(~val & (ds.labels.source == s))
        log(f"fitting on the {len(train_rows)} training faces of {s} alone")
        predictions[s] = fit_predict(heads, ds, train_rows, test_rows, options.threads)
    predictions[ALL_SOURCES] = heads.predict(ds.X[test_rows])
    table: dict[str, dict[str, Any]] = {}
    offset = 0
    for s, rows in tests.items():
        part = slice(offset, offset + len(rows))
        offset += len(rows)
        male, age = ds.labels.male[rows], ds.labels.age[rows]
        table[s] = {name: cell(male, age, p[part], a[part]) for name, (p, a) in predictions.items()}
    result = {"sources": sources, "table": table, "gaps": gaps(table, sources), "heads": str(options.heads),
              "features": str(options.features), "fit_rows": {s: int((~val & (ds.labels.source == s)).sum()) for s in sources}}
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "loso.json").write_text(json.dumps(result, indent=2))
    (options.out / "report.md").write_text("\n".join(report_lines(result)) + "\n")
    return result


def gaps(table: dict[str, dict[str, Any]], sources: list[str]) -> dict[str, dict[str, float]]:
    """Per test source: in-source minus out-of-source (points of accuracy; years of MAE,
    positive when the unseen source is worse)."""
    out = {}
    for s in sources:
        others = [o for o in sources if o != s]
        if len(others) != 1:
            continue  # with three or more sources "the other" is not one fit
        inside, outside = table[s][s], table[s][others[0]]
        out[s] = {
            "gender_accuracy_points": round(100 * (inside["gender_accuracy"] - outside["gender_accuracy"]), 2),
            "age_mae_years": round(outside["age_mae"] - inside["age_mae"], 3),
        }
    return out


def report_lines(result: dict[str, Any]) -> list[str]:
    sources = result["sources"]
    lines = [
        "# Leave-one-source-out",
        "",
        "Rows: the faces the heads were fitted on (training split). Columns: the validation faces of each source, "
        "gender accuracy and age MAE with 95% intervals (Wilson; bootstrap). Heads refitted with the hyperparameters "
        f"and round counts of `{result['heads']}`.",
        "",
        "| fitted on | faces | " + " | ".join(f"{s} gender | {s} MAE" for s in sources) + " |",
        "| --- | ---: | " + " | ".join("---: | ---:" for _ in sources) + " |",
    ]
    names = [PRETRAINED, *sources, ALL_SOURCES]
    for name in names:
        faces = result["fit_rows"].get(name, sum(result["fit_rows"].values()) if name == ALL_SOURCES else 0)
        cells = []
        for s in sources:
            c = result["table"][s][name]
            acc_ci, mae_ci = c["gender_accuracy_ci"], c["age_mae_ci"]
            cells.append(f"{c['gender_accuracy']:.1%} [{acc_ci[0]:.1%}-{acc_ci[1]:.1%}]")
            cells.append(f"{c['age_mae']:.2f} [{mae_ci[0]:.2f}-{mae_ci[1]:.2f}]")
        lines.append(f"| {name} | {faces:,} | " + " | ".join(cells) + " |")
    lines += ["", "Gap (fitted on the test source alone minus fitted on the other source alone):", ""]
    for s, g in result["gaps"].items():
        lines.append(f"- {s}: gender {g['gender_accuracy_points']:+.2f} points, age MAE {g['age_mae_years']:+.2f} years")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.loso", description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--heads", type=Path, required=True, help="heads fitted with --split: their parameters are reused")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--out", type=Path, required=True, help="folder for loso.json and report.md")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    problem = missing_fit(args.heads, args.features)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    result = loso(LosoOptions(args.features, args.heads, args.out, args.labels, args.threads))
    print("\n".join(report_lines(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
