"""Metrics on small arrays whose answers can be checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics
from training.metrics import age_metrics, baselines, bootstrap_ci, calibration, decade_label, gender_metrics, gender_roc


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


def test_bootstrap_ci_of_a_constant_is_the_constant():
    assert bootstrap_ci(np.full(50, 0.75)) == (0.75, 0.75)
    assert bootstrap_ci(np.ones(10, bool)) == (1.0, 1.0)  # 0/1 correctness, all right


def test_bootstrap_ci_too_few_rows_and_bad_arguments():
    assert bootstrap_ci(np.array([])) is None
    assert bootstrap_ci(np.array([3.0])) is None
    with pytest.raises(ValueError):
        bootstrap_ci(np.arange(5.0), level=1.5)


def test_bootstrap_ci_matches_the_normal_interval_and_narrows():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, 2000)
    low, high = bootstrap_ci(x, seed=3)
    # the mean's 95% interval is about mean +- 1.96 sd / sqrt(n); the bootstrap agrees
    # within 10% on this many rows (Monte Carlo error of 1000 resamples is ~3%)
    half = 1.96 * x.std() / math.sqrt(len(x))
    assert low < x.mean() < high
    assert (high - low) == pytest.approx(2 * half, rel=0.10)
    assert (low + high) / 2 == pytest.approx(x.mean(), abs=0.2 * half)
    few = bootstrap_ci(x[:50], seed=3)
    assert few[1] - few[0] > 4 * (high - low)  # sqrt(2000 / 50) = 6.3 times wider
    narrow = bootstrap_ci(x, level=0.5, seed=3)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_ci_is_seeded_and_takes_other_statistics():
    x = np.arange(40.0) ** 1.5
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5) != bootstrap_ci(x, seed=6)
    low, high = bootstrap_ci(x, statistic=np.median, seed=5)
    assert low <= np.median(x) <= high and (low, high) != bootstrap_ci(x, seed=5)


def test_bootstrap_ci_chunking_does_not_change_the_answer(monkeypatch):
    x = np.random.default_rng(2).random(300)
    whole = bootstrap_ci(x, n_resamples=200, seed=9)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK_ELEMENTS", 7 * 300 + 11)  # chunks of 7 resamples
    assert bootstrap_ci(x, n_resamples=200, seed=9) == pytest.approx(whole, abs=1e-12)


def test_calibration_by_hand():
    # four faces called male at 0.95, two of them right: confidence .95, accuracy .5 (gap .45);
    # four called female at p=.28 (confidence .72), three right: accuracy .75 (gap .03)
    y = np.array([1, 1, 0, 0, 0, 0, 0, 1], bool)
    p = np.array([0.95] * 4 + [0.28] * 4)
    c = calibration(y, p)
    assert c["n"] == 8 and c["bins"] == 15 and len(c["reliability"]) == 15
    assert c["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.03)
    assert c["mce"] == pytest.approx(0.45)
    assert c["accuracy"] == pytest.approx(5 / 8) and c["mean_confidence"] == pytest.approx((0.95 + 0.72) / 2)
    assert c["brier"] == pytest.approx((2 * 0.05**2 + 2 * 0.95**2 + 3 * 0.28**2 + 0.72**2) / 8)
    full = [b for b in c["reliability"] if b["n"]]
    assert [(b["n"], b["accuracy"]) for b in full] == [(4, 0.75), (4, 0.5)]
    assert full[0]["lower"] <= 0.72 < full[0]["upper"] and full[1]["lower"] <= 0.95 < full[1]["upper"]
    assert c["reliability"][0]["lower"] == 0.5 and c["reliability"][-1]["upper"] == 1.0
    assert c["reliability"][0]["accuracy"] is None
    # swapping which class is "male" changes nothing
    flipped = calibration(~y, 1 - p)
    assert flipped["ece"] == pytest.approx(c["ece"]) and flipped["mce"] == pytest.approx(c["mce"])


def test_calibration_edges_and_certainty():
    # confidence exactly 1.0 goes in the last bin and 0.5 in the first; a sure, right model has ECE 0
    c = calibration(np.array([1, 0, 1], bool), np.array([1.0, 0.0, 0.5]), bins=5)
    assert [b["n"] for b in c["reliability"]] == [1, 0, 0, 0, 2]
    assert c["reliability"][-1]["accuracy"] == 1.0 and c["reliability"][0]["accuracy"] == 1.0  # 0.5 predicts male
    assert c["ece"] == pytest.approx(1 / 3 * 0.5)
    assert calibration(np.array([1, 0], bool), np.array([1.0, 0.0]))["ece"] == 0.0
    empty = calibration(np.zeros(0, bool), np.zeros(0))
    assert empty["ece"] is None and empty["mce"] is None and all(b["n"] == 0 for b in empty["reliability"])
    with pytest.raises(ValueError):
        calibration(np.ones(3, bool), np.ones(2))


def test_calibration_of_a_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(0)
    n = 200_000
    confidence = rng.uniform(0.5, 1.0, n)
    says_male = rng.random(n) < 0.5
    right = rng.random(n) < confidence  # right exactly as often as it claims
    p = np.where(says_male, confidence, 1 - confidence)
    y = says_male == right
    # sampling noise alone: ~13k faces a bin, so each bin's accuracy is off by ~0.004
    assert calibration(y, p)["ece"] < 0.01
    # the same answers pushed towards certainty: claims (1 + c) / 2, is right with c
    sure = np.where(says_male, (1 + confidence) / 2, (1 - confidence) / 2)
    over = calibration(y, sure)
    # expected gap: mean of (1 + c) / 2 - c = (1 - c) / 2 over c ~ U(0.5, 1) = 0.125
    assert over["ece"] == pytest.approx(0.125, abs=0.01)
    assert over["mean_confidence"] > over["accuracy"]


def test_wilson_interval_of_an_accuracy_has_width_even_without_errors():
    from training.metrics import wilson_ci

    low, high = wilson_ci(np.ones(60, bool))
    assert high == pytest.approx(1.0) and 0.93 < low < 0.95  # 60 of 60 right: not proof of 100%
    low, high = wilson_ci(np.array([True] * 80 + [False] * 20))
    assert low == pytest.approx(0.7112, abs=1e-3) and high == pytest.approx(0.8666, abs=1e-3)  # the textbook 80/100
    assert wilson_ci(np.array([], bool)) is None
