"""Score an age/gender model on labelled faces, overall and per source, race and gender.

    python -m training.evaluate --data ../shared/data/faces --limit 2000 --seed 0 \\
        --json docs/eval/eval.json --report docs/eval
    python -m training.evaluate --model models/other.onnx --data DIR --split val --split-seed 0 \\
        [--val-fraction 0.2] [--predictions preds.csv] [--batch-size 32] [--device cpu]

DIR holds labels.csv (file, gender, age[, race, source]) and the images. Every image is
cropped exactly as the live pipeline crops (`training.facecrops.crop_for_model`); where
the detector finds no face the whole image is the crop and the image still counts, and
the no-face rate is reported overall and per source, since it is part of what the model
will meet. Images that cannot be read at all are counted and listed, not scored.

Gender: accuracy, precision and recall per class, ROC AUC, confusion matrix. Age: MAE,
RMSE and bias where the age is known (labels below 1 or above 100 are unknown), per age
decade, per gender and per race. Each comes with two references: predicting the median
age / majority gender for everyone, and the model's predictions against shuffled labels.

`--limit N` scores a random sample of N faces, allocated to the sources in proportion.
`--split val` scores only the validation split: the heads trainer's split
(`training.splits`) when that module is present, else `training.datasets.split_records`.
`--degrade NAME[,NAME...]` (or `all`) scores the same faces again under each named
degradation of `training.degrade` (small faces, JPEG, motion blur, brightness, rotation,
detector box jitter) and adds a "degradations" table, clean first, and degradations.png.
Exit codes: 0 done, 2 bad input (one line on stderr), 1 unexpected error, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from realtime.cli import OneLineParser, positive_int, probability, run_command, silence_native_logs

silence_native_logs()  # before OpenCV, MediaPipe and TensorFlow load

import numpy as np

from realtime.errors import OutputError
from realtime.smoothing import SmoothingOptions
from training.datasets import DatasetError, FaceRecord, read_shared, split_records
from training.degrade import DEGRADATIONS, Degradation, DegradationError, degraded_input, parse_degradations, record_rng
from training.metrics import (
    abstention,
    age_decades,
    age_metrics,
    baselines,
    bootstrap_ci,
    wilson_ci,
    calibration,
    decade_label,
    gender_metrics,
    gender_roc,
)

DEFAULT_BATCH = 32
CI_RESAMPLES = 1000  # bootstrap resamples per interval: ~1 ms each on the test set's few faces
# a still face is one view: below the product's default confidence it would show "uncertain"
UNCERTAIN_BELOW = SmoothingOptions.gender_threshold


# --- selecting the faces ---------------------------------------------------------------


def sample_by_source(records: Sequence[FaceRecord], limit: int, seed: int) -> list[FaceRecord]:
    """`limit` records drawn without replacement, each source in proportion to its size
    (largest remainder), in their original order; all of them when there are fewer."""
    if limit >= len(records):
        return list(records)
    sources = sorted({r.source for r in records})
    index = {s: [i for i, r in enumerate(records) if r.source == s] for s in sources}
    exact = {s: limit * len(index[s]) / len(records) for s in sources}
    take = {s: int(exact[s]) for s in sources}
    for s in sorted(sources, key=lambda s: (-(exact[s] - take[s]), s))[: limit - sum(take.values())]:
        take[s] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for s in sources:
        chosen.extend(rng.choice(index[s], size=take[s], replace=False).tolist())
    return [records[i] for i in sorted(chosen)]


@dataclass(frozen=True)
class SplitChoice:
    name: str  # "all" or "val"
    seed: int
    val_fraction: float | None
    function: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "val_fraction": self.val_fraction, "function": self.function}


def default_val_fraction() -> float:
    try:
        from training.splits import DEFAULT_VAL_FRACTION

        return float(DEFAULT_VAL_FRACTION)
    except ImportError:
        return 0.2


def validation_records(
    records: list[FaceRecord], data_dir: Path, seed: int, fraction: float
) -> tuple[list[FaceRecord], str]:
    """The validation split, by the heads trainer's function where it exists."""
    try:
        from training.labels import load_labels
        from training.splits import validation_mask
    except ImportError:
        return split_records(records, fraction, seed).val, "training.datasets.split_records"
    try:
        labels = load_labels(data_dir / "labels.csv")
        mask = validation_mask(labels, seed, fraction)
    except (ValueError, KeyError) as exc:
        raise DatasetError(f"cannot split {data_dir / 'labels.csv'}: {exc}") from None
    val_paths = {labels.root / f for f, v in zip(labels.file, mask) if v}
    return [r for r in records if r.path in val_paths], "training.splits.validation_mask"


# --- scoring ---------------------------------------------------------------------------


@dataclass
class Scored:
    """One row per readable face, aligned with `records`."""

    records: list[FaceRecord]
    p_male: np.ndarray
    age: np.ndarray
    age_std: np.ndarray
    face_found: np.ndarray
    unreadable: list[str]

    def labels(self) -> dict[str, np.ndarray]:
        r = self.records
        return {
            "male": np.array([x.gender == "male" for x in r], bool),
            "gender_known": np.array([x.gender is not None for x in r], bool),
            "gender": np.array([x.gender or "" for x in r], dtype=object),
            "age": np.array([np.nan if x.age is None else float(x.age) for x in r]),
            "race": np.array([x.race or "" for x in r], dtype=object),
            "source": np.array([x.source for x in r], dtype=object),
        }


def score_records(
    records: Sequence[FaceRecord],
    model: Any,
    detector: Any,
    batch_size: int,
    progress: bool = True,
    degradation: Degradation | None = None,
    seed: int = 0,
    label: str = "scoring",
) -> Scored:
    """Every readable face cropped as served and scored; under `degradation` when given,
    each face with its own Generator from (`seed`, its index), so reruns agree."""
    import cv2
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from training.facecrops import crop_for_model

    size, margin = model.input_size, model.metadata.crop_margin
    kept: list[FaceRecord] = []
    found: list[bool] = []
    outputs: list[Any] = []
    unreadable: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            outputs.append(model.predict(np.stack(batch)))
            batch.clear()

    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("faces"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("scoring", total=len(records))
        for index, record in enumerate(records):
            image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
            if image is None or image.size == 0:
                unreadable.append(str(record.path))
            else:
                image, cropper = degraded_input(image, detector, degradation, record_rng(seed, index))
                crop = crop_for_model(image, cropper, size, margin)
                batch.append(crop.crop)
                found.append(crop.face_found)
                kept.append(record)
                if len(batch) >= batch_size:
                    flush()
            bar.advance(task)
        flush()

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(o, name) for o in outputs]).astype(np.float64) if outputs else np.zeros(0)

    return Scored(kept, cat("p_male"), cat("age"), cat("age_std"), np.array(found, bool), unreadable)


# --- summarising -----------------------------------------------------------------------


def section(scored: Scored, mask: np.ndarray, seed: int) -> dict[str, Any]:
    """All metrics for the faces in `mask`, with the headline numbers at the top."""
    lab = scored.labels()
    g = mask & lab["gender_known"]
    gender = gender_metrics(lab["male"][g], scored.p_male[g])
    age = age_metrics(lab["age"][mask], scored.age[mask], {"gender": lab["gender"][mask], "race": lab["race"][mask]})
    base = baselines(lab["male"][g], scored.p_male[g], lab["age"][mask], scored.age[mask], seed=seed)
    n = int(mask.sum())
    aged = g & np.isfinite(lab["age"])
    decades = age_decades(np.where(aged, lab["age"], 0.0))
    correct = (scored.p_male >= 0.5) == lab["male"]
    abs_error = np.abs(scored.age - lab["age"])  # NaN where the age is unknown

    def ci(values: np.ndarray) -> list[float] | None:
        # 95% percentile bootstrap, seeded by the run's seed so a rerun gives the same
        # interval and two models scored with one seed are resampled alike
        interval = bootstrap_ci(values, n_resamples=CI_RESAMPLES, seed=seed)
        return None if interval is None else list(interval)

    def accuracy_ci(values: np.ndarray) -> list[float] | None:
        interval = wilson_ci(values)
        return None if interval is None else list(interval)

    def decade_row(rows: np.ndarray) -> dict[str, Any]:
        return {
            "n": int(rows.sum()),
            "accuracy": float(correct[rows].mean()),
            "ci": accuracy_ci(correct[rows]),
            "uncertain": abstention(lab["male"][rows], scored.p_male[rows], UNCERTAIN_BELOW),
        }

    gender_by_decade = {decade_label(d): decade_row(aged & (decades == d)) for d in sorted(set(decades[aged].tolist()))}
    known_age = mask & np.isfinite(lab["age"])
    age_decade = age_decades(np.where(known_age, lab["age"], 0.0))
    for d in sorted(set(age_decade[known_age].tolist())):
        age["by_decade"][decade_label(d)]["mae_ci"] = ci(abs_error[known_age & (age_decade == d)])
    return {
        "n": n,
        "gender_accuracy": gender["accuracy"],
        "gender_accuracy_ci": accuracy_ci(correct[g]),
        "gender_roc_auc": gender["roc_auc"],
        "age_mae": age["mae"],
        "age_mae_ci": ci(abs_error[known_age]),
        "age_rmse": age["rmse"],
        "age_bias": age["bias"],
        "no_face_rate": float((~scored.face_found[mask]).mean()) if n else None,
        "gender_majority_accuracy": base["gender"].get("majority_accuracy"),
        "gender_shuffled_accuracy": base["gender"].get("shuffled_accuracy"),
        "age_median_baseline_mae": base["age"].get("median_mae"),
        "age_shuffled_mae": base["age"].get("shuffled_mae"),
        "gender": gender,
        "gender_by_decade": gender_by_decade,
        "calibration": calibration(lab["male"][g], scored.p_male[g]),
        "uncertain": abstention(lab["male"][g], scored.p_male[g], UNCERTAIN_BELOW),
        "age": age,
        "baselines": base,
    }


def summarise(scored: Scored, seed: int) -> dict[str, Any]:
    lab = scored.labels()
    everyone = np.ones(len(scored.records), bool)
    out: dict[str, Any] = {"overall": section(scored, everyone, seed)}
    out["by_source"] = {str(s): section(scored, lab["source"] == s, seed) for s in sorted(set(lab["source"]))}
    races = sorted({r for r in lab["race"] if r})
    out["by_race"] = {str(r): section(scored, lab["race"] == r, seed) for r in races}
    out["by_gender"] = {str(g): section(scored, lab["gender"] == g, seed) for g in sorted({g for g in lab["gender"] if g})}
    out["by_face_found"] = {
        "face_found": section(scored, scored.face_found, seed),
        "no_face": section(scored, ~scored.face_found, seed),
    }
    no_face = lambda m: {"n": int(m.sum()), "no_face": int((~scored.face_found[m]).sum()), "rate": float((~scored.face_found[m]).mean()) if m.any() else None}  # noqa: E731
    out["no_face"] = {
        "overall": no_face(everyone),
        "by_source": {str(s): no_face(lab["source"] == s) for s in sorted(set(lab["source"]))},
    }
    out["no_face_rate"] = out["no_face"]["overall"]["rate"]
    return out


# --- report ------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def with_ci(text: str, ci: list[float] | None, scale: float = 1.0, digits: int = 1) -> str:
    """`text` followed by its interval, e.g. "97.9% [97.4-98.3]"; unchanged without one."""
    if text == "–" or ci is None:
        return text
    return f"{text} [{scale * ci[0]:.{digits}f}-{scale * ci[1]:.{digits}f}]"


def pct_ci(value: float | None, ci: list[float] | None) -> str:
    return with_ci(pct(value), ci, 100.0)


def mae_ci(value: float | None, ci: list[float] | None, digits: int = 2) -> str:
    return with_ci(fmt(value, digits), ci, 1.0, digits)


def save_figure(fig: Any, out: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def plot_roc(lab: dict[str, np.ndarray], scored: Scored, result: dict[str, Any], colours: dict[str, str], out: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, mask in [("all", np.ones(len(lab["male"]), bool))] + [(s, lab["source"] == s) for s in colours]:
        m = mask & lab["gender_known"]
        curve = gender_roc(lab["male"][m], scored.p_male[m])
        if curve is None:
            continue
        auc = result["overall"] if name == "all" else result["by_source"][name]
        ax.plot(*curve, label=f"{name} (AUC {fmt(auc['gender_roc_auc'])}, n={int(m.sum())})", color="black" if name == "all" else colours[name], lw=2 if name == "all" else 1.2)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlabel="false positive rate (female called male)", ylabel="true positive rate (male called male)", title="Gender ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, out, "roc.png")


def plot_confusion(result: dict[str, Any], sources: list[str], out: Path) -> str:
    import matplotlib.pyplot as plt

    panels = [("all", result["overall"])] + [(s, result["by_source"][s]) for s in sources]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), squeeze=False)
    for ax, (name, sec) in zip(axes[0], panels):
        cm = np.array(sec["gender"]["confusion_matrix"]["matrix"], dtype=float)
        rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j])}\n{100 * rows[i, j]:.1f}%", ha="center", va="center", color="white" if rows[i, j] > 0.5 else "black", fontsize=9)
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["female", "male"], yticklabels=["female", "male"], xlabel="predicted", ylabel="true", title=f"{name} (acc {pct(sec['gender_accuracy'])})")
    return save_figure(fig, out, "confusion.png")


def plot_age_scatter(lab: dict[str, np.ndarray], scored: Scored, result: dict[str, Any], colours: dict[str, str], out: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    known = np.isfinite(lab["age"])
    for s in colours:
        m = known & (lab["source"] == s)
        ax.scatter(lab["age"][m], scored.age[m], s=5, alpha=0.35, color=colours[s], label=f"{s} (MAE {fmt(result['by_source'][s]['age_mae'], 1)})", edgecolors="none")
    top = max(100.0, float(np.nanmax(scored.age)) if len(scored.age) else 100.0)
    ax.plot([0, top], [0, top], color="black", lw=1, ls="--")
    ax.set(xlabel="labelled age", ylabel="predicted age", title="Predicted vs labelled age", xlim=(0, 101), ylim=(0, top + 1))
    ax.legend(loc="upper left", fontsize=8, markerscale=3)
    return save_figure(fig, out, "age_scatter.png")


def plot_mae_by_decade(result: dict[str, Any], colours: dict[str, str], out: Path) -> str:
    import matplotlib.pyplot as plt

    sources = list(colours)
    decades = [decade_label(d) for d in range(11)]
    present = [d for d in decades if any(d in result["by_source"][s]["age"]["by_decade"] for s in sources)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(sources), 1)
    x = np.arange(len(present))
    for k, s in enumerate(sources):
        by = result["by_source"][s]["age"]["by_decade"]
        vals = [by[d]["mae"] if d in by and by[d]["n"] else np.nan for d in present]
        ns = [by[d]["n"] if d in by else 0 for d in present]
        bars = ax.bar(x + (k - (len(sources) - 1) / 2) * width, vals, width, label=s, color=colours[s])
        for b, n in zip(bars, ns):
            if n:
                ax.text(b.get_x() + b.get_width() / 2, b.get_height(), str(n), ha="center", va="bottom", fontsize=6)
    ax.axhline(result["overall"]["age_mae"] or 0, color="black", lw=1, ls="--", label=f"overall MAE {fmt(result['overall']['age_mae'], 1)}")
    ax.set(xticks=x, xticklabels=present, xlabel="labelled age", ylabel="MAE (years)", title="Age MAE per decade (bar labels: faces)")
    ax.legend(fontsize=8)
    return save_figure(fig, out, "mae_by_decade.png")


def plot_by_race(result: dict[str, Any], out: Path) -> str:
    import matplotlib.pyplot as plt

    races = list(result["by_race"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
    a1.bar(races, [result["by_race"][r]["gender_accuracy"] or 0 for r in races], color="tab:blue")
    a1.set(ylim=(0.5, 1.0), ylabel="gender accuracy", title="Gender accuracy per race")
    a2.bar(races, [result["by_race"][r]["age_mae"] or 0 for r in races], color="tab:orange")
    a2.set(ylabel="age MAE (years)", title="Age MAE per race")
    for a in (a1, a2):
        a.tick_params(axis="x", labelsize=8)
    return save_figure(fig, out, "by_race.png")


def plot_reliability(result: dict[str, Any], colours: dict[str, str], out: Path) -> str:
    """Reliability diagram of the gender probability: accuracy against confidence per bin."""
    import matplotlib.pyplot as plt

    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    panels = [("all", result["overall"], "black")] + [(s, result["by_source"][s], colours[s]) for s in colours]
    for name, sec, colour in panels:
        cal = sec["calibration"]
        full = [b for b in cal["reliability"] if b["n"]]
        if not full:
            continue
        ax.plot(
            [b["mean_confidence"] for b in full], [b["accuracy"] for b in full], marker="o", ms=4, color=colour,
            lw=2 if name == "all" else 1.2, label=f"{name} (ECE {fmt(cal['ece'])}, n={cal['n']})",
        )
    ax.plot([0.5, 1], [0.5, 1], ls=":", color="grey", lw=1)
    ax.set(ylabel="accuracy", title="Gender reliability (predicted class)", xlim=(0.5, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    bins = result["overall"]["calibration"]["reliability"]
    counts.bar([(b["lower"] + b["upper"]) / 2 for b in bins], [b["n"] for b in bins], width=bins[0]["upper"] - bins[0]["lower"], color="grey", edgecolor="white")
    counts.set(xlabel="confidence max(p, 1 - p)", ylabel="faces (all)")
    return save_figure(fig, out, "reliability.png")


def write_plots(scored: Scored, result: dict[str, Any], out: Path) -> list[str]:
    """The report's PNG plots in `out`; their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = scored.labels()
    sources = sorted(result["by_source"])
    colours = {s: c for s, c in zip(sources, plt.rcParams["axes.prop_cycle"].by_key()["color"])}
    written = [
        plot_roc(lab, scored, result, colours, out),
        plot_confusion(result, sources, out),
        plot_age_scatter(lab, scored, result, colours, out),
        plot_mae_by_decade(result, colours, out),
        plot_reliability(result, colours, out),
    ]
    if result["by_race"]:
        written.append(plot_by_race(result, out))
    if "degradations" in result:
        written.append(plot_degradations(result, out))
    return written


def plot_degradations(result: dict[str, Any], out: Path) -> str:
    """Gender accuracy and age MAE, clean and under each degradation, with their 95% intervals."""
    import matplotlib.pyplot as plt

    rows = result["degradations"]
    names = list(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(names) + 2), 3.8))
    x = np.arange(len(names))
    panels = ((a1, "gender_accuracy", 100.0, "gender accuracy (%)", "tab:blue"), (a2, "age_mae", 1.0, "age MAE (years)", "tab:orange"))
    for ax, key, scale, label, colour in panels:
        vals = np.array([np.nan if rows[n][key] is None else scale * rows[n][key] for n in names])
        cis = [rows[n][f"{key}_ci"] for n in names]
        err = np.array([[v - scale * c[0], scale * c[1] - v] if c else [0.0, 0.0] for v, c in zip(vals, cis)]).T
        ax.bar(x, vals, color=["black"] + [colour] * (len(names) - 1))
        ax.errorbar(x, vals, yerr=np.clip(err, 0, None), fmt="none", ecolor="grey", capsize=3)
        ax.axhline(vals[0], color="black", lw=1, ls="--")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel=label)
    lowest = min((100.0 * r["gender_accuracy_ci"][0] for r in rows.values() if r["gender_accuracy_ci"]), default=50.0)
    a1.set_ylim(min(50.0, lowest - 5.0), 100.0)  # 50% is chance, and keep every interval in view
    a1.set_title("Gender accuracy (95% Wilson)")
    a2.set_title("Age MAE (95% bootstrap)")
    return save_figure(fig, out, "degradations.png")


def headline_row(name: str, sec: dict[str, Any]) -> str:
    return (
        f"| {name} | {sec['n']} | {pct_ci(sec['gender_accuracy'], sec.get('gender_accuracy_ci'))} | {fmt(sec['gender_roc_auc'])} "
        f"| {pct(sec['gender_majority_accuracy'])} | {pct(sec['gender_shuffled_accuracy'])} "
        f"| {mae_ci(sec['age_mae'], sec.get('age_mae_ci'))} | {fmt(sec['age_rmse'], 2)} | {fmt(sec['age_bias'], 2)} "
        f"| {fmt(sec['age_median_baseline_mae'], 2)} | {fmt(sec['age_shuffled_mae'], 2)} | {pct(sec['no_face_rate'])} |"
    )


HEADLINE_HEADER = (
    "| | faces | gender acc | AUC | majority | shuffled | age MAE | RMSE | bias | median MAE | shuffled MAE | no face |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def intro_lines(result: dict[str, Any]) -> list[str]:
    """What was scored, on what, and how to read the references."""
    model, split = result["model"], result["split"]
    return [
        f"# Evaluation: {model['name']} {model['version']}",
        "",
        f"- model: `{model['file']}` (input {model['input_size']} px, crop margin {model['crop_margin']})",
        f"- data: `{result['data']}`, {result['n_labelled']} labelled faces"
        + (f", validation split ({split['function']}, seed {split['seed']}, fraction {split['val_fraction']})" if split["name"] == "val" else "")
        + (f", sample of {result['limit']} (seed {result['seed']}, stratified by source)" if result["limit"] else ""),
        f"- scored: {result['n_scored']} faces; unreadable images: {result['n_unreadable']}",
        f"- no face detected (whole image used as the crop): {pct(result['no_face_rate'])} overall, "
        + ", ".join(f"{s} {pct(v['rate'])} ({v['no_face']}/{v['n']})" for s, v in result["no_face"]["by_source"].items()),
        f"- {result['seconds']:.0f} s on {', '.join(model['providers'])}",
        "",
        "References: *majority* is always guessing the commoner gender; *shuffled* scores the model's own "
        "predictions against randomly permuted labels (a model that learned nothing); *median MAE* predicts "
        "the median labelled age of that group for everyone (chosen in hindsight, so generous). "
        "Age metrics leave out unknown ages (labels below 1 or above 100 count as unknown); bias is predicted minus labelled.",
        "",
        (
            f"Brackets are 95% intervals: Wilson score intervals for accuracies, bootstrap ({CI_RESAMPLES} resamples "
            f"of the faces, seed {result['seed']}) for age errors. A change that stays inside them is not told from noise."
        ),
    ]


def group_lines(result: dict[str, Any]) -> list[str]:
    """The headline table, then by race, by labelled gender and by whether a face was found."""
    lines = ["", "## Headline", "", HEADLINE_HEADER, headline_row("**all**", result["overall"])]
    lines += [headline_row(s, v) for s, v in result["by_source"].items()]
    if result["by_race"]:
        lines += [
            "",
            "## By race (UTKFace labels)",
            "",
            "Each group has its own age mix (UTKFace's asian faces include many infants, whose ages "
            "are easy to get within a few years), so compare each MAE with that group's median MAE, "
            "not across groups.",
            "",
            HEADLINE_HEADER,
        ]
        lines += [headline_row(r, v) for r, v in result["by_race"].items()]
    lines += [
        "",
        "## By labelled gender",
        "",
        "| | faces | gender recall | age MAE | RMSE | bias | median MAE | no face |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {g} | {v['n']} | {pct_ci(v['gender_accuracy'], v.get('gender_accuracy_ci'))} "
        f"| {mae_ci(v['age_mae'], v.get('age_mae_ci'))} | {fmt(v['age_rmse'], 2)} "
        f"| {fmt(v['age_bias'], 2)} | {fmt(v['age_median_baseline_mae'], 2)} | {pct(v['no_face_rate'])} |"
        for g, v in result["by_gender"].items()
    ]
    lines += ["", "## Face found vs whole image", "", HEADLINE_HEADER]
    return lines + [headline_row(k.replace("_", " "), v) for k, v in result["by_face_found"].items() if v["n"]]


def gender_class_lines(result: dict[str, Any]) -> list[str]:
    """Precision and recall per class, and the confusion matrices, overall and per source."""
    sections = [("all", result["overall"])] + list(result["by_source"].items())
    lines = ["", "## Gender: precision and recall", "", "| | class | precision | recall | F1 | faces |", "|---|---|---:|---:|---:|---:|"]
    for name, sec in sections:
        for cls, m in sec["gender"]["per_class"].items():
            lines.append(f"| {name} | {cls} | {pct(m['precision'])} | {pct(m['recall'])} | {pct(m['f1'])} | {m['support']} |")
    lines += ["", "Confusion matrices (rows true, columns predicted; female, male):", ""]
    for name, sec in sections:
        (tn, fp), (fn, tp) = sec["gender"]["confusion_matrix"]["matrix"]
        lines.append(f"- {name}: female→female {tn}, female→male {fp}, male→female {fn}, male→male {tp}")
    return lines


def decade_lines(result: dict[str, Any], title: str, column: str, cell: Any) -> list[str]:
    """A table by decade of labelled age, a column for all and for each source;
    `cell(section, decade)` is the text of one cell, "–" where there are no faces."""
    sources = list(result["by_source"])
    sections = [result["overall"]] + [result["by_source"][s] for s in sources]
    lines = ["", f"## {title}", "", "| decade | " + " | ".join(f"{s} {column} (faces)" for s in ["all"] + sources) + " |", "|---|" + "---:|" * (len(sources) + 1)]
    for d in (decade_label(d) for d in range(11)):
        cells = [cell(sec, d) for sec in sections]
        if any(c != "–" for c in cells):
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return lines


def mae_cell(sec: dict[str, Any], decade: str) -> str:
    m = sec["age"]["by_decade"].get(decade)
    return f"{mae_ci(m['mae'], m.get('mae_ci'), 1)} ({m['n']})" if m and m["n"] else "–"


def accuracy_cell(sec: dict[str, Any], decade: str) -> str:
    m = sec.get("gender_by_decade", {}).get(decade)
    return f"{pct_ci(m['accuracy'], m.get('ci'))} ({m['n']})" if m and m["n"] else "–"


def uncertain_cell(sec: dict[str, Any], decade: str) -> str:
    m = sec.get("gender_by_decade", {}).get(decade)
    if not m or not m["n"]:
        return "–"
    u = m["uncertain"]
    return f"{pct(u['shown_share'])} / {pct(u['confident_wrong_share'])} ({m['n']})"


def uncertain_lines(result: dict[str, Any]) -> list[str]:
    u = result["overall"]["uncertain"]
    lines = decade_lines(
        result, f"Gender shown at the product's default confidence ({UNCERTAIN_BELOW:.0%})", "shown / wrong", uncertain_cell
    )
    return lines[:3] + [
        f"Below the confidence a gender is reported as uncertain (run_camera.py --gender-confidence). Per decade: the "
        f"share of faces shown a gender / the share shown a wrong one. All faces: {pct(u['shown_share'])} shown, "
        f"{pct(u['accuracy_shown'])} of those right, {pct(u['confident_wrong_share'])} shown wrong.",
        "",
    ] + lines[3:]


def calibration_lines(result: dict[str, Any]) -> list[str]:
    """ECE and MCE of the gender probability, overall and per source, race and gender."""
    parts = [("**all**", result["overall"])] + list(result["by_source"].items()) + [(f"race {r}", v) for r, v in result["by_race"].items()]
    lines = [
        "",
        "## Gender calibration",
        "",
        (
            "Confidence is the predicted class's probability, max(p, 1 - p); ECE is the face-weighted mean gap between "
            f"confidence and accuracy over {result['overall']['calibration']['bins']} equal bins of [0.5, 1], "
            "MCE the largest gap of a bin (0 is perfect; with few faces a bin, MCE is mostly noise). See reliability.png."
        ),
        "",
        "| | faces | ECE | MCE | mean confidence | accuracy | Brier |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, sec in parts:
        cal = sec.get("calibration")
        if cal and cal["n"]:
            lines.append(
                f"| {name} | {cal['n']} | {fmt(cal['ece'])} | {fmt(cal['mce'])} | {pct(cal['mean_confidence'])} "
                f"| {pct(cal['accuracy'])} | {fmt(cal['brier'])} |"
            )
    return lines


def signed(value: float | None, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    return "–" if value is None else f"{scale * value:+.{digits}f}{unit}"


def degradation_lines(result: dict[str, Any]) -> list[str]:
    """The same faces clean, then under each degradation with its change against clean."""
    rows = result["degradations"]
    lines = [
        "",
        "## Robustness to degradations",
        "",
        (
            "The same faces, clean and degraded before the detector (or, for jitter, at the crop), seeded per face "
            f"(seed {result['seed']}). Changes are against clean on the same faces; the brackets are each row's own "
            "95% interval, not the change's (paired on the same faces, a change is pinned down more tightly than the "
            "two intervals suggest). See degradations.png."
        ),
        "",
        "| | degradation | faces | gender acc | change | age MAE | change | no face | change |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        first = name == "clean"
        lines.append(
            f"| {'**clean**' if first else name} | {r['description']} | {r['n']} "
            f"| {pct_ci(r['gender_accuracy'], r['gender_accuracy_ci'])} | {'' if first else signed(r['gender_accuracy_change'], 100, 1, ' pt')} "
            f"| {mae_ci(r['age_mae'], r['age_mae_ci'])} | {'' if first else signed(r['age_mae_change'], 1, 2)} "
            f"| {pct(r['no_face_rate'])} | {'' if first else signed(r['no_face_rate_change'], 100, 1, ' pt')} |"
        )
    return lines


def write_markdown(result: dict[str, Any], plots: list[str], out: Path) -> None:
    """report.md in `out`: every table of the result, then the plots."""
    lines = intro_lines(result) + group_lines(result) + gender_class_lines(result)
    lines += decade_lines(result, "Age MAE per decade", "MAE", mae_cell)
    lines += decade_lines(result, "Gender accuracy per decade of labelled age", "accuracy", accuracy_cell)
    lines += calibration_lines(result)
    lines += uncertain_lines(result)
    if "degradations" in result:
        lines += degradation_lines(result)
    if result["n_unreadable"]:
        lines += ["", "## Unreadable images", ""] + [f"- `{p}`" for p in result["unreadable"][:20]]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n")


# --- command line ------------------------------------------------------------------------


def build_parser() -> OneLineParser:
    from realtime.paths import DEFAULT_MODEL

    p = OneLineParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"ONNX model with metadata (default {DEFAULT_MODEL})")
    p.add_argument("--data", type=Path, required=True, help="folder with labels.csv and the images")
    p.add_argument("--json", type=Path, default=None, help="write all metrics here")
    p.add_argument("--report", type=Path, default=None, help="folder for report.md and the PNG plots")
    p.add_argument("--limit", type=positive_int, default=None, help="score a sample of N faces, stratified by source")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample and the shuffled controls")
    p.add_argument("--split", choices=("all", "val"), default="all", help="'val': only the held-out validation split")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")
    p.add_argument("--val-fraction", type=probability, default=None, help="validation fraction (default: the heads trainer's)")
    p.add_argument("--predictions", type=Path, default=None, help="also write one CSV row per scored face")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH)
    p.add_argument("--device", default="cpu", help="onnxruntime device: auto, cpu, cuda, tensorrt (default cpu)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--degrade", type=degradation_names, default=(), metavar="NAME[,NAME...]",
        help=f"also score the faces under each degradation: {', '.join(DEGRADATIONS)}, or all",
    )
    return p


def degradation_names(text: str) -> tuple[str, ...]:
    """--degrade's names, refused by the parser (one line, exit 2) before anything loads."""
    import argparse

    try:
        return parse_degradations(text)
    except DegradationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class EvaluateOptions:
    data: Path  # folder with labels.csv and the images
    model: Path  # ONNX model with metadata
    json: Path | None = None  # all metrics
    report: Path | None = None  # folder for report.md and the plots
    predictions: Path | None = None  # one CSV row per scored face
    limit: int | None = None  # score a sample of this many faces, stratified by source
    seed: int = 0  # of the sample and the shuffled controls
    split: Literal["all", "val"] = "all"
    split_seed: int = 0
    val_fraction: float | None = None  # None: the heads trainer's
    batch_size: int = DEFAULT_BATCH
    device: str = "cpu"
    progress: bool = True
    degrade: tuple[str, ...] = ()  # `training.degrade.DEGRADATIONS` names to score the faces under, besides clean


def check_output_path(path: Path, is_dir: bool) -> None:
    target = path if is_dir else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {target}: {exc.strerror or exc}") from None
    if not os.access(target, os.W_OK):
        raise OutputError(f"cannot write to {target}")
    if path.exists() and path.is_dir() != is_dir:
        raise OutputError(f"{path} exists and is {'not ' if is_dir else ''}a folder")


def check_outputs(options: EvaluateOptions) -> None:
    """Refuse an output that cannot be written before the scoring, not after it."""
    for path, is_dir in ((options.json, False), (options.report, True), (options.predictions, False)):
        if path is not None:
            check_output_path(path, is_dir)


def select_records(options: EvaluateOptions, records: list[FaceRecord]) -> tuple[list[FaceRecord], SplitChoice]:
    """The records to score: the validation split if asked, then the --limit sample."""
    if options.split == "val":
        val_fraction = options.val_fraction or default_val_fraction()
        records, function = validation_records(records, options.data, options.split_seed, val_fraction)
        split = SplitChoice("val", options.split_seed, val_fraction, function)
    else:
        split = SplitChoice("all", options.split_seed, None, None)
    if options.limit:
        records = sample_by_source(records, options.limit, options.seed)
    if not records:
        raise DatasetError("no faces left to score after the split")
    return records, split


def score_with_model(options: EvaluateOptions, records: list[FaceRecord]) -> tuple[Scored, Any, dict[str, Scored]]:
    """Crop as the live pipeline does and run the model, clean and under each of
    `options.degrade`; (clean scores, the model, degraded scores by name)."""
    from realtime.detection import DetectorOptions, FaceDetector
    from realtime.model import AgeGenderModel

    model = AgeGenderModel.create(options.model, options.device)
    degraded: dict[str, Scored] = {}
    with FaceDetector.create_from_options(DetectorOptions()) as detector:
        scored = score_records(records, model, detector, options.batch_size, progress=options.progress)
        if not scored.records:
            raise DatasetError(f"none of the {len(records)} images could be read (first: {scored.unreadable[0]})")
        for name in options.degrade:
            degraded[name] = score_records(
                records, model, detector, options.batch_size, progress=options.progress,
                degradation=DEGRADATIONS[name], seed=options.seed, label=name,
            )
    return scored, model, degraded


DEGRADATION_KEYS = ("n", "gender_accuracy", "gender_accuracy_ci", "age_mae", "age_mae_ci", "no_face_rate")


def degradation_rows(clean: Scored, degraded: dict[str, Scored], seed: int) -> dict[str, Any]:
    """The headline numbers clean and under each degradation, each with its change against clean."""

    def row(scored: Scored) -> dict[str, Any]:
        sec = section(scored, np.ones(len(scored.records), bool), seed)
        return {k: sec[k] for k in DEGRADATION_KEYS}

    base = row(clean)
    rows: dict[str, Any] = {"clean": {"description": "as read", **base}}
    for name, scored in degraded.items():
        r = row(scored)
        change = {
            f"{k}_change": None if r[k] is None or base[k] is None else r[k] - base[k]
            for k in ("gender_accuracy", "age_mae", "no_face_rate")
        }
        rows[name] = {"description": DEGRADATIONS[name].description, **r, **change}
    return rows


def run_header(options: EvaluateOptions, model: Any, n_labelled: int, split: SplitChoice, scored: Scored) -> dict[str, Any]:
    """What was scored with what: the top of the result."""
    meta = model.metadata
    return {
        "model": {
            "file": str(options.model),
            "name": meta.name,
            "version": meta.version,
            "input_size": meta.input_size,
            "crop_margin": meta.crop_margin,
            "providers": model.providers,
        },
        "data": str(options.data),
        "n_labelled": n_labelled,
        "split": split.as_dict(),
        "limit": options.limit,
        "seed": options.seed,
        "n_scored": len(scored.records),
        "n_unreadable": len(scored.unreadable),
        "unreadable": scored.unreadable[:100],
    }


def write_outputs(options: EvaluateOptions, scored: Scored, result: dict[str, Any]) -> None:
    if options.report is not None:
        plots = write_plots(scored, result, options.report)
        write_markdown(result, plots, options.report)
    if options.predictions is not None:
        write_predictions(scored, options.predictions)
    if options.json is not None:
        tmp = options.json.with_name(options.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(options.json)


def evaluate(options: EvaluateOptions) -> dict[str, Any]:
    """Score the model on the labelled faces; every metric, also written where asked."""
    started = time.perf_counter()
    check_outputs(options)
    dataset = read_shared(options.data)
    if not dataset.records:
        raise DatasetError(f"{options.data / 'labels.csv'} lists no images")
    records, split = select_records(options, dataset.records)
    scored, model, degraded = score_with_model(options, records)
    result = run_header(options, model, len(dataset.records), split, scored)
    result.update(summarise(scored, options.seed))
    if degraded:
        result["degradations"] = degradation_rows(scored, degraded, options.seed)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(options, scored, result)
    return result


def write_predictions(scored: Scored, path: Path) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "source", "gender", "age", "race", "p_male", "age_pred", "age_std", "face_found"])
        for r, p, a, sd, found in zip(scored.records, scored.p_male, scored.age, scored.age_std, scored.face_found):
            writer.writerow([str(r.path), r.source, r.gender or "", "" if r.age is None else r.age, r.race or "", f"{p:.4f}", f"{a:.2f}", f"{sd:.2f}", int(found)])


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']['name']} on {result['n_scored']} faces")
    for col in ("", "faces", "gender acc", "shuffled", "AUC", "age MAE", "median MAE", "no face"):
        table.add_column(col, justify="right" if col else "left")
    rows = [("all", result["overall"])] + list(result["by_source"].items()) + list(result["by_race"].items())
    for name, s in rows:
        table.add_row(
            name, str(s["n"]), pct(s["gender_accuracy"]), pct(s["gender_shuffled_accuracy"]), fmt(s["gender_roc_auc"]),
            fmt(s["age_mae"], 2), fmt(s["age_median_baseline_mae"], 2), pct(s["no_face_rate"]),
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = EvaluateOptions(
        data=args.data, model=args.model, json=args.json, report=args.report, predictions=args.predictions,
        limit=args.limit, seed=args.seed, split=args.split, split_seed=args.split_seed, val_fraction=args.val_fraction,
        batch_size=args.batch_size, device=args.device, progress=not args.no_progress, degrade=args.degrade,
    )

    def work() -> int:
        print_summary(evaluate(options))
        return 0

    return run_command(work)


if __name__ == "__main__":
    sys.exit(main())
