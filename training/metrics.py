"""Evaluation metrics as pure functions of label and prediction arrays.

Everything returns plain dicts of Python numbers (JSON-ready). Gender is scored as a
binary problem with "male" as the positive class, from the probability `p_male`; age
as a regression in years. Unknown true ages (NaN) are excluded from age metrics and
counted. Two references say whether a score means anything: predicting the median age
(or the majority gender) for everyone, and the model's own predictions scored against
shuffled labels, which is what a model that learned nothing would get.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

GENDER_LABELS = ("female", "male")  # negative, positive


def _f(value: float | np.floating) -> float | None:
    value = float(value)
    return None if not np.isfinite(value) else value


def gender_metrics(y_true_male: np.ndarray, p_male: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC AUC and the confusion matrix.

    The confusion matrix is [[tn, fp], [fn, tp]]: rows the true class, columns the
    predicted one, in the order of `labels` (female, male). AUC is None when only one
    class is present.
    """
    y = np.asarray(y_true_male, dtype=bool).reshape(-1)
    p = np.asarray(p_male, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({len(y)}) and probabilities ({len(p)}) differ in length")
    n = len(y)
    if n == 0:
        return {"n": 0, "accuracy": None, "roc_auc": None, "per_class": {}, "confusion_matrix": {"labels": list(GENDER_LABELS), "matrix": [[0, 0], [0, 0]]}}
    pred = p >= threshold
    matrix = confusion_matrix(y, pred, labels=[False, True])
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=[False, True], zero_division=0)
    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k, name in enumerate(GENDER_LABELS)
    }
    both = 0 < y.sum() < n
    return {
        "n": n,
        "accuracy": float((pred == y).mean()),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "threshold": threshold,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(GENDER_LABELS), "matrix": matrix.astype(int).tolist()},
    }


def gender_roc(y_true_male: np.ndarray, p_male: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(false positive rate, true positive rate) for plotting; None with one class."""
    y = np.asarray(y_true_male, dtype=bool)
    if not 0 < y.sum() < len(y):
        return None
    fpr, tpr, _ = roc_curve(y, np.asarray(p_male, dtype=np.float64))
    return fpr, tpr


def decade_label(decade: int) -> str:
    return f"{decade * 10}-{decade * 10 + 9}" if decade < 10 else "100+"


def age_decades(age: np.ndarray) -> np.ndarray:
    """Decade index of each (known) age: 0 for 0-9, ..., 10 for 100 and over."""
    return np.minimum(np.floor(np.asarray(age, dtype=np.float64) / 10.0), 10).astype(int)


def _errors(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    err = pred - y
    return {
        "n": int(len(y)),
        "mae": float(np.abs(err).mean()) if len(y) else None,
        "rmse": float(np.sqrt((err**2).mean())) if len(y) else None,
        "bias": float(err.mean()) if len(y) else None,  # mean of predicted - true
    }


def _known(values: np.ndarray) -> np.ndarray:
    """Group values that mean something: not None, empty or NaN."""
    out = np.ones(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and np.isnan(v)):
            out[i] = False
    return out


def age_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, groups: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """MAE, RMSE and bias overall, per true-age decade and per value of each group.

    `groups` maps a name (e.g. 'gender', 'race') to an array aligned with `y_true`;
    None/''/NaN values are left out of that group's breakdown. Rows whose true age is
    NaN are excluded everywhere and counted in `n_unknown`.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y.shape != pred.shape:
        raise ValueError(f"true ages ({len(y)}) and predictions ({len(pred)}) differ in length")
    known = np.isfinite(y)
    out = _errors(y[known], pred[known])
    out["n_unknown"] = int((~known).sum())
    decades = age_decades(np.where(known, y, 0.0))
    out["by_decade"] = {
        decade_label(d): _errors(y[known & (decades == d)], pred[known & (decades == d)])
        for d in sorted(set(decades[known].tolist()))
    }
    out["by_group"] = {}
    for name, values in (groups or {}).items():
        values = np.asarray(values, dtype=object).reshape(-1)
        if len(values) != len(y):
            raise ValueError(f"group {name!r} has {len(values)} values for {len(y)} ages")
        usable = known & _known(values)
        out["by_group"][name] = {
            str(v): _errors(y[usable & (values == v)], pred[usable & (values == v)])
            for v in sorted({str(v) for v in values[usable]})
        }
    return out


def baselines(
    y_true_male: np.ndarray | None = None,
    p_male: np.ndarray | None = None,
    age_true: np.ndarray | None = None,
    age_pred: np.ndarray | None = None,
    seed: int = 0,
    n_shuffles: int = 20,
    median_age: float | None = None,
) -> dict[str, Any]:
    """What scores mean nothing: constant predictions and shuffled labels.

    gender: the majority class's accuracy, and the accuracy and AUC of `p_male` against
    randomly permuted labels (mean over `n_shuffles` permutations).
    age: the MAE/RMSE of predicting `median_age` for everyone (default: the median of
    the known true ages, i.e. the best constant in hindsight, a generous baseline), and
    the MAE of `age_pred` against shuffled true ages.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    if y_true_male is not None:
        y = np.asarray(y_true_male, dtype=bool).reshape(-1)
        gender: dict[str, Any] = {"n": int(len(y))}
        if len(y):
            male_share = float(y.mean())
            gender["majority_class"] = "male" if male_share >= 0.5 else "female"
            gender["majority_accuracy"] = max(male_share, 1.0 - male_share)
        if p_male is not None and len(y):
            p = np.asarray(p_male, dtype=np.float64).reshape(-1)
            accs, aucs = [], []
            for _ in range(n_shuffles):
                shuffled = rng.permutation(y)
                accs.append(float(((p >= 0.5) == shuffled).mean()))
                if 0 < shuffled.sum() < len(shuffled):
                    aucs.append(float(roc_auc_score(shuffled, p)))
            gender["shuffled_accuracy"] = float(np.mean(accs))
            gender["shuffled_roc_auc"] = float(np.mean(aucs)) if aucs else None
        out["gender"] = gender
    if age_true is not None:
        a = np.asarray(age_true, dtype=np.float64).reshape(-1)
        known = np.isfinite(a)
        a_known = a[known]
        age: dict[str, Any] = {"n": int(known.sum())}
        if len(a_known):
            median = float(np.median(a_known)) if median_age is None else float(median_age)
            err = a_known - median
            age["median"] = median
            age["median_mae"] = float(np.abs(err).mean())
            age["median_rmse"] = float(np.sqrt((err**2).mean()))
            if age_pred is not None:
                pred = np.asarray(age_pred, dtype=np.float64).reshape(-1)[known]
                maes = [float(np.abs(pred - rng.permutation(a_known)).mean()) for _ in range(n_shuffles)]
                age["shuffled_mae"] = float(np.mean(maes))
        out["age"] = age
    return out


def breakdown(
    source: np.ndarray,
    male: np.ndarray,
    age: np.ndarray,
    p_male: np.ndarray,
    age_pred: np.ndarray,
    race: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Gender and age metrics for all rows, each source and each race (where known).

    Keys: 'all', the source names, and 'race:<race>'; each value is
    {'gender': gender_metrics(...), 'age': age_metrics(...)} of those rows.
    """
    source = np.asarray(source).astype(str)
    male = np.asarray(male, dtype=bool)
    age = np.asarray(age, dtype=np.float64)
    p_male = np.asarray(p_male, dtype=np.float64)
    age_pred = np.asarray(age_pred, dtype=np.float64)
    parts: list[tuple[str, np.ndarray]] = [("all", np.ones(len(source), bool))]
    parts += [(str(s), source == s) for s in sorted(set(source.tolist()))]
    if race is not None:
        race = np.asarray(race, dtype=object)
        known = _known(race)
        parts += [(f"race:{r}", known & (race == r)) for r in sorted({str(r) for r in race[known]})]
    return {
        name: {"gender": gender_metrics(male[rows], p_male[rows]), "age": age_metrics(age[rows], age_pred[rows])}
        for name, rows in parts
    }


def print_breakdown(report: dict[str, dict[str, Any]], title: str = "", stderr: bool = False) -> None:
    """`breakdown`'s result as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for column in ("", "faces", "gender acc", "AUC", "aged", "age MAE", "RMSE", "bias"):
        table.add_column(column, justify="right" if column else "left")

    def show(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for name, part in report.items():
        g, a = part["gender"], part["age"]
        table.add_row(
            name,
            str(g["n"]),
            show(g["accuracy"], ".2%"),
            show(g["roc_auc"], ".3f"),
            str(a["n"]),
            show(a["mae"], ".2f"),
            show(a["rmse"], ".2f"),
            show(a["bias"], "+.2f"),
        )
    Console(stderr=stderr).print(table)


# Resampled index arrays are drawn in chunks of at most this many elements (about 32 MB
# of int64), so a bootstrap over a large evaluation does not need n_resamples * n memory.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


def bootstrap_ci(
    values: np.ndarray,
    statistic: Any = np.mean,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of `statistic` over the rows of `values`.

    `statistic(sample, axis=1)` must reduce each row of a (resamples, n) array, as the
    numpy reductions do (np.mean, np.median, ...): all resamples are scored in one call
    per chunk instead of a Python loop. Per-row errors go in, e.g. 0/1 correctness for
    an accuracy interval or absolute errors for an MAE interval. None for fewer than 2
    rows, where resampling says nothing.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(x)
    if n < 2:
        return None
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, not {n_resamples}")
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    stats = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows_per_chunk):
        stop = min(start + rows_per_chunk, n_resamples)
        index = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = statistic(x[index], axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def wilson_ci(correct: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (the share of True in `correct`); None for no rows.

    For accuracies rather than the bootstrap: a group without a single error still gets
    an interval of real width (60 of 60 right: about 94-100%), where resampling its rows
    would claim exactly 100%.
    """
    from statistics import NormalDist

    x = np.asarray(correct, dtype=bool).reshape(-1)
    n = len(x)
    if n == 0:
        return None
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    p = x.mean()
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def calibration(y_true_male: np.ndarray, p_male: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """How far the gender probability can be taken at its word, for a reliability diagram.

    Scored as the predicted class's confidence, max(p, 1 - p), against whether the
    thresholded prediction (p >= 0.5 is male) was right, so both genders share one
    scale in [0.5, 1]. That range is cut into `bins` equal-width bins ([lo, hi), the last
    one closed). ECE is the count-weighted mean of |accuracy - mean confidence| over the
    bins, MCE the largest such gap over non-empty bins; 0 is perfectly calibrated. Each
    bin reports (lower, upper, n, mean_confidence, accuracy), the last two None when
    empty. Brier is the mean squared error of p_male itself, a check independent of the
    binning.
    """
    y = np.asarray(y_true_male, dtype=bool).reshape(-1)
    p = np.asarray(p_male, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({len(y)}) and probabilities ({len(p)}) differ in length")
    if bins < 1:
        raise ValueError(f"bins must be positive, not {bins}")
    edges = np.linspace(0.5, 1.0, bins + 1)
    confidence = np.maximum(p, 1.0 - p)
    correct = (p >= 0.5) == y
    # searchsorted on the edges, not floor((c - 0.5) / width): a confidence exactly on an
    # edge must land in the bin it opens, whatever the float rounding of the division.
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    n = len(y)
    table: list[dict[str, Any]] = []
    ece, mce = 0.0, None
    for b in range(bins):
        in_bin = which == b
        count = int(in_bin.sum())
        row: dict[str, Any] = {"lower": float(edges[b]), "upper": float(edges[b + 1]), "n": count, "mean_confidence": None, "accuracy": None}
        if count:
            row["mean_confidence"] = float(confidence[in_bin].mean())
            row["accuracy"] = float(correct[in_bin].mean())
            gap = abs(row["accuracy"] - row["mean_confidence"])
            ece += count / n * gap
            mce = gap if mce is None else max(mce, gap)
        table.append(row)
    return {
        "n": n,
        "bins": bins,
        "ece": float(ece) if n else None,
        "mce": mce,
        "mean_confidence": float(confidence.mean()) if n else None,
        "accuracy": float(correct.mean()) if n else None,
        "brier": float(((p - y) ** 2).mean()) if n else None,
        "reliability": table,
    }


def abstention(y_true_male: np.ndarray, p_male: np.ndarray, threshold: float) -> dict[str, Any]:
    """What a user sees when a gender is shown only at confidence >= `threshold` and is
    "uncertain" below it: the share shown, how often a shown gender is right, and the
    share of all faces shown with a wrong gender (the confident mistakes)."""
    if not 0.5 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0.5, 1), not {threshold}")
    y = np.asarray(y_true_male, dtype=bool).reshape(-1)
    p = np.asarray(p_male, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({len(y)}) and probabilities ({len(p)}) differ in length")
    shown = np.maximum(p, 1.0 - p) >= threshold
    wrong = (p >= 0.5) != y
    n = len(y)
    return {
        "n": n,
        "threshold": threshold,
        "shown_share": float(shown.mean()) if n else None,
        "accuracy_shown": float((~wrong[shown]).mean()) if shown.any() else None,
        "confident_wrong_share": float((shown & wrong).mean()) if n else None,
    }
