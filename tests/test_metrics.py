"""Metrics on small arrays whose answers can be checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import age_metrics, baselines, decade_label, gender_metrics, gender_roc


def test_gender_metrics_by_hand():
    # true:  M M M M F F F F ; p >= .5 predicts male
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.3, 0.05])
    m = gender_metrics(y, p)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["confusion_matrix"] == {"labels": ["female", "male"], "matrix": [[3, 1], [1, 3]]}  # [[tn, fp], [fn, tp]]
    assert m["per_class"]["male"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["male"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["female"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["female"]["support"] == 4
    # AUC: of the 16 (male, female) pairs, the male scores higher in 14
    # (0.2 loses to 0.6 and 0.3)
    assert m["roc_auc"] == pytest.approx(14 / 16)


def test_gender_metrics_asymmetric_and_threshold():
    y = np.array([1, 1, 1, 0], bool)
    p = np.array([0.9, 0.4, 0.6, 0.55])
    m = gender_metrics(y, p)
    assert m["confusion_matrix"]["matrix"] == [[0, 1], [1, 2]]
    assert m["per_class"]["male"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["male"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["female"]["precision"] == 0.0  # never predicted: 0, not an error
    strict = gender_metrics(y, p, threshold=0.95)
    assert strict["confusion_matrix"]["matrix"] == [[1, 0], [3, 0]]


def test_gender_metrics_one_class_and_empty():
    m = gender_metrics(np.ones(3, bool), np.array([0.9, 0.2, 0.7]))
    assert m["roc_auc"] is None and m["accuracy"] == pytest.approx(2 / 3)
    assert gender_roc(np.ones(3, bool), np.array([0.9, 0.2, 0.7])) is None
    assert gender_metrics(np.zeros(0, bool), np.zeros(0))["n"] == 0
    with pytest.raises(ValueError):
        gender_metrics(np.ones(3, bool), np.ones(2))


def test_age_metrics_by_hand():
    true = np.array([5, 15, 25, 35, np.nan, 104])
    pred = np.array([7, 12, 25, 39, 50, 100])
    m = age_metrics(true, pred)
    errors = np.array([2, -3, 0, 4, -4])
    assert m["n"] == 5 and m["n_unknown"] == 1
    assert m["mae"] == pytest.approx(13 / 5)
    assert m["rmse"] == pytest.approx(math.sqrt((errors**2).mean()))
    assert m["bias"] == pytest.approx(errors.mean())
    assert list(m["by_decade"]) == ["0-9", "10-19", "20-29", "30-39", "100+"]
    assert m["by_decade"]["10-19"] == {"n": 1, "mae": 3.0, "rmse": 3.0, "bias": -3.0}
    assert m["by_decade"]["100+"]["mae"] == 4.0


def test_age_metrics_groups_skip_unknown_values():
    true = np.array([20, 30, 40, 50, np.nan])
    pred = np.array([22, 30, 30, 50, 10])
    gender = np.array(["male", "female", "male", "female", "male"])
    race = np.array(["white", "", "asian", None, "white"], dtype=object)
    m = age_metrics(true, pred, {"gender": gender, "race": race})
    assert m["by_group"]["gender"]["male"]["mae"] == pytest.approx(6.0)  # 2 and 10
    assert m["by_group"]["gender"]["female"]["mae"] == 0.0
    assert set(m["by_group"]["race"]) == {"white", "asian"}
    assert m["by_group"]["race"]["white"]["n"] == 1  # the NaN-age white row is excluded
    with pytest.raises(ValueError):
        age_metrics(true, pred, {"bad": np.zeros(2)})


def test_decade_labels():
    assert decade_label(0) == "0-9" and decade_label(9) == "90-99" and decade_label(10) == "100+"


def test_baselines_median_and_majority():
    y = np.array([1, 1, 1, 0], bool)
    ages = np.array([10, 20, 30, 100, np.nan])
    b = baselines(y, None, ages, None)
    assert b["gender"]["majority_class"] == "male" and b["gender"]["majority_accuracy"] == 0.75
    assert b["age"]["median"] == 25.0
    assert b["age"]["median_mae"] == pytest.approx((15 + 5 + 5 + 75) / 4)
    assert b["age"]["n"] == 4
    fixed = baselines(age_true=ages, median_age=20)
    assert fixed["age"]["median_mae"] == pytest.approx((10 + 0 + 10 + 80) / 4)


def test_shuffled_control_destroys_a_perfect_model():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.5
    p = y.astype(float) * 0.8 + 0.1  # perfect
    ages = rng.uniform(1, 90, 2000)
    b = baselines(y, p, ages, ages, seed=3)
    assert gender_metrics(y, p)["accuracy"] == 1.0
    assert abs(b["gender"]["shuffled_accuracy"] - 0.5) < 0.05
    assert abs(b["gender"]["shuffled_roc_auc"] - 0.5) < 0.05
    assert b["age"]["shuffled_mae"] > 20  # perfect predictions, shuffled: ~ mean |a - b| of uniforms
    assert baselines(y, p, ages, ages, seed=3) == b  # deterministic by seed


def test_breakdown_by_source_and_race(capsys):
    from training.metrics import breakdown, print_breakdown

    source = np.array(["wiki", "wiki", "utkface", "utkface"])
    male = np.array([1, 0, 1, 0], bool)
    age = np.array([30, np.nan, 20, 40])
    p = np.array([0.9, 0.2, 0.4, 0.1])
    pred = np.array([32, 50, 20, 30])
    race = np.array(["", "", "white", "black"], dtype=object)
    report = breakdown(source, male, age, p, pred, race)
    assert list(report) == ["all", "utkface", "wiki", "race:black", "race:white"]
    assert report["all"]["gender"]["accuracy"] == 0.75
    assert report["all"]["age"]["mae"] == pytest.approx(12 / 3)
    assert report["wiki"]["age"]["n"] == 1 and report["race:white"]["gender"]["accuracy"] == 0.0
    print_breakdown(report, "t")
    assert "race:black" in capsys.readouterr().out
