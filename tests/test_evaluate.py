"""python -m training.evaluate on a small set of real faces, and its one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from realtime.paths import DEFAULT_MODEL, ROOT
from tests.conftest import FACES
from training.datasets import FaceRecord
from training.evaluate import sample_by_source

@pytest.fixture(scope="module")
def eval_model() -> Path:
    assert DEFAULT_MODEL.is_file(), f"the shipped model is missing: {DEFAULT_MODEL}"
    return DEFAULT_MODEL


def run_evaluate(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "training.evaluate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def write_labels(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "gender", "age", "race", "source", "orig_px"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, labels) -> Path:
    """labels.csv with 60 real faces (absolute paths into ../shared), one impossible
    age and one unreadable image."""
    root = tmp_path_factory.mktemp("evalset")
    rng = np.random.default_rng(7)
    rows = []
    for source in ("wiki", "utkface"):
        pool = [r for r in labels if r["source"] == source]
        for i in rng.choice(len(pool), 30, replace=False):
            row = dict(pool[i])
            row["file"] = str(FACES / row["file"])
            rows.append(row)
    rows[0]["age"] = "0"  # impossible: unknown, still scored for gender
    (root / "broken.webp").write_bytes(b"RIFF0000WEBPnot really an image")
    rows.append({"file": "broken.webp", "gender": "male", "age": "30", "race": "", "source": "wiki", "orig_px": "100"})
    write_labels(root / "labels.csv", rows)
    return root


@pytest.fixture(scope="module")
def evaluated(small_set, eval_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalout")
    result = run_evaluate(
        "--model", str(eval_model), "--data", str(small_set),
        "--json", str(out / "eval.json"), "--report", str(out / "report"), "--no-progress",
        "--predictions", str(out / "preds.csv"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out, json.loads((out / "eval.json").read_text()), result


def test_json_structure(evaluated):
    _, data, _ = evaluated
    assert data["n_labelled"] == 61 and data["n_scored"] == 60 and data["n_unreadable"] == 1
    assert data["unreadable"][0].endswith("broken.webp")
    assert set(data["by_source"]) == {"wiki", "utkface"}
    for part in [data["overall"], *data["by_source"].values()]:
        for key in ("n", "gender_accuracy", "gender_roc_auc", "age_mae", "age_rmse", "no_face_rate", "gender", "age", "baselines"):
            assert key in part, key
        assert set(part["gender"]["per_class"]) == {"female", "male"}
        assert len(part["gender"]["confusion_matrix"]["matrix"]) == 2
        assert part["age"]["by_decade"]
    assert data["by_source"]["wiki"]["n"] == 30 and data["by_source"]["utkface"]["n"] == 30
    assert data["overall"]["age"]["n_unknown"] == 1 and data["overall"]["age"]["n"] == 59
    assert data["overall"]["gender"]["n"] == 60
    assert 0.0 <= data["no_face_rate"] <= 1.0
    assert set(data["no_face"]["by_source"]) == {"wiki", "utkface"}
    assert set(data["by_race"]) <= {"white", "black", "asian", "indian", "other"} and data["by_race"]
    assert set(data["overall"]["age"]["by_group"]) == {"gender", "race"}
    assert sum(d["n"] for d in data["overall"]["gender_by_decade"].values()) == 59


def test_predictions_csv(evaluated):
    out, data, _ = evaluated
    with open(out / "preds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == data["n_scored"]
    assert {"file", "p_male", "age_pred", "face_found"} <= set(rows[0])
    accuracy = np.mean([(float(r["p_male"]) >= 0.5) == (r["gender"] == "male") for r in rows])
    assert accuracy == pytest.approx(data["overall"]["gender_accuracy"])


def test_real_faces_beat_the_controls(evaluated):
    _, data, _ = evaluated
    overall = data["overall"]
    assert overall["gender_accuracy"] > 0.8
    assert overall["gender_accuracy"] > overall["gender_shuffled_accuracy"] + 0.25
    assert overall["gender_roc_auc"] > 0.85
    assert overall["age_mae"] < overall["age_median_baseline_mae"]
    assert overall["age_mae"] < overall["age_shuffled_mae"]


def test_report_and_plots(evaluated):
    out, data, result = evaluated
    report = out / "report"
    for name in ("roc.png", "confusion.png", "age_scatter.png", "mae_by_decade.png", "report.md"):
        assert (report / name).is_file() and (report / name).stat().st_size > 1000, name
    assert (report / "roc.png").read_bytes()[:4] == b"\x89PNG"
    text = (report / "report.md").read_text()
    assert "wiki" in text and "utkface" in text and "no face detected" in text
    assert "shuffled" in text and "![roc.png](roc.png)" in text
    assert "wiki" in result.stdout  # the summary table


def test_intervals_and_calibration(evaluated):
    out, data, _ = evaluated

    def inside(ci, value) -> None:
        assert ci is not None and ci[0] <= value + 1e-12 and value - 1e-12 <= ci[1], (ci, value)

    for part in [data["overall"], *data["by_source"].values(), *data["by_race"].values(), *data["by_gender"].values()]:
        inside(part["gender_accuracy_ci"], part["gender_accuracy"])
        inside(part["age_mae_ci"], part["age_mae"])
        for decade in [*part["gender_by_decade"].values()]:
            inside(decade["ci"], decade["accuracy"])  # Wilson: an interval from one face on
        for decade in part["age"]["by_decade"].values():
            if decade["n"] >= 2:
                inside(decade["mae_ci"], decade["mae"])
        cal = part["calibration"]
        assert 0.0 <= cal["ece"] <= cal["mce"] <= 1.0
        assert sum(b["n"] for b in cal["reliability"]) == cal["n"] == part["gender"]["n"]
    overall = data["overall"]
    lo, hi = overall["gender_accuracy_ci"]
    mae_lo, mae_hi = overall["age_mae_ci"]
    assert mae_hi - mae_lo > 0.1  # 59 ages cannot pin the MAE down to a point
    assert hi - lo > 0.02  # nor 60 genders the accuracy, not even with no error among them
    report = out / "report"
    assert (report / "reliability.png").read_bytes()[:4] == b"\x89PNG" and (report / "reliability.png").stat().st_size > 1000
    text = (report / "report.md").read_text()
    assert f"{100 * overall['gender_accuracy']:.1f}% [{100 * lo:.1f}-{100 * hi:.1f}]" in text
    assert "## Gender calibration" in text and f"{overall['calibration']['ece']:.3f}" in text
    assert "![reliability.png](reliability.png)" in text


def test_limit_and_validation_split(small_set, eval_model, tmp_path):
    result = run_evaluate(
        "--model", str(eval_model), "--data", str(small_set), "--limit", "8", "--seed", "3",
        "--split", "val", "--split-seed", "1", "--val-fraction", "0.5", "--json", str(tmp_path / "e.json"), "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["split"]["name"] == "val" and data["split"]["val_fraction"] == 0.5
    assert data["n_scored"] + data["n_unreadable"] == 8
    assert data["limit"] == 8


def test_sample_by_source_is_proportional_and_seeded():
    records = [FaceRecord(Path(f"{s}{i}.webp"), "male", 30, None, s, None) for s, n in (("a", 300), ("b", 100)) for i in range(n)]
    sample = sample_by_source(records, 40, seed=0)
    assert Counter(r.source for r in sample) == {"a": 30, "b": 10}
    assert sample == sample_by_source(records, 40, seed=0)
    assert sample != sample_by_source(records, 40, seed=1)
    assert sample_by_source(records, 1000, seed=0) == records
    odd = sample_by_source(records, 3, seed=0)
    assert len(odd) == 3


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_data_dir(tmp_path, eval_model):
    line = one_line_error(run_evaluate("--model", str(eval_model), "--data", str(tmp_path / "nope")))
    assert "not found" in line


def test_folder_without_labels(tmp_path, eval_model):
    line = one_line_error(run_evaluate("--model", str(eval_model), "--data", str(tmp_path)))
    assert "labels.csv" in line


def test_bad_and_missing_model(small_set, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    line = one_line_error(run_evaluate("--model", str(bad), "--data", str(small_set), "--limit", "2"))
    assert "model" in line
    line = one_line_error(run_evaluate("--model", str(tmp_path / "none.onnx"), "--data", str(small_set)))
    assert "not found" in line


def test_bad_option():
    line = one_line_error(run_evaluate("--data", ".", "--limit", "-3"))
    assert "positive integer" in line


def test_validation_split_uses_the_trainers_split_when_present(small_set, monkeypatch):
    from training.datasets import read_shared, split_records
    from training.evaluate import validation_records

    records = read_shared(small_set).records
    val, function = validation_records(records, small_set, seed=0, fraction=0.5)
    assert val and len(val) < len(records) and set(val) <= set(records)
    try:
        from training.labels import load_labels
        from training.splits import validation_mask
    except ImportError:
        assert function == "training.datasets.split_records"
    else:
        assert function == "training.splits.validation_mask"
        labels = load_labels(small_set / "labels.csv")
        mask = validation_mask(labels, 0, 0.5)
        assert {r.path for r in val} == {labels.root / f for f, v in zip(labels.file, mask) if v}
    # without the trainer's module, the datasets split
    monkeypatch.setitem(sys.modules, "training.splits", None)
    val, function = validation_records(records, small_set, seed=0, fraction=0.5)
    assert function == "training.datasets.split_records"
    assert val == split_records(records, 0.5, 0).val


def test_degradations(small_set, eval_model, tmp_path):
    """The same faces clean and under three degradations: one row each in the JSON, a
    table in the report and the bar plot."""
    result = run_evaluate(
        "--model", str(eval_model), "--data", str(small_set), "--degrade", "face24,jpeg30,jitter",
        "--json", str(tmp_path / "e.json"), "--report", str(tmp_path / "report"), "--no-progress",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "e.json").read_text())
    rows = data["degradations"]
    assert list(rows) == ["clean", "face24", "jpeg30", "jitter"]
    clean = rows["clean"]
    assert clean["gender_accuracy"] == data["overall"]["gender_accuracy"] and clean["age_mae"] == data["overall"]["age_mae"]
    for name, row in rows.items():
        assert row["n"] == data["n_scored"] == 60, name  # the same faces; the unreadable one left out each time
        for key in ("gender_accuracy", "age_mae"):  # Wilson's upper bound at 100% is 1 - 2e-16
            assert row[f"{key}_ci"][0] - 1e-12 <= row[key] <= row[f"{key}_ci"][1] + 1e-12, (name, key)
        assert 0.0 <= row["no_face_rate"] <= 1.0, name
        if name != "clean":
            assert row["age_mae_change"] == pytest.approx(row["age_mae"] - clean["age_mae"]), name
            assert row["age_mae"] != clean["age_mae"], name  # the degradation reached the model
    # a face 24 px wide has lost most of what tells an age
    assert rows["face24"]["age_mae"] > clean["age_mae"]
    report = tmp_path / "report"
    assert (report / "degradations.png").read_bytes()[:4] == b"\x89PNG"
    text = (report / "report.md").read_text()
    table = text[text.index("## Robustness to degradations") :]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["**clean**", "face24", "jpeg30", "jitter"]
    face24 = rows["face24"]
    assert f"{face24['age_mae']:.2f} [{face24['age_mae_ci'][0]:.2f}-{face24['age_mae_ci'][1]:.2f}] | {face24['age_mae_change']:+.2f}" in lines[2]
    assert "![degradations.png](degradations.png)" in text


def test_unknown_degradation():
    result = run_evaluate("--data", ".", "--degrade", "face24,fog")  # refused by the parser: nothing loads
    line = one_line_error(result)
    assert result.returncode == 2
    assert "unknown degradation fog" in line and "known: face24" in line and "jitter" in line
