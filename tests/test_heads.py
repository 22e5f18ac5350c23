"""training.bottlenecks, training.splits and training.heads on real faces.

480 labelled faces (240 per source) go through the real detector, crop and backbone
(tests/heads_data.py); heads are fitted on the train split and scored on the held-out
split. They must beat predicting the median age / the majority gender, and heads
fitted on shuffled labels (the same faces) must not.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.heads_data import backbone_path, feature_set, fitted_heads, run_module
from training.bottlenecks import load_features
from training.heads import FitConfig, Heads, HeadsRecord, fit, fold_ids, score
from training.labels import load_labels
from training.splits import split_for_files, strata, validation_mask

pytestmark = pytest.mark.skipif(backbone_path() is None, reason="no backbone model (models/faceres.onnx)")


@pytest.fixture(scope="module")
def data():
    return feature_set()


def val_truth(data):
    files, _, _ = load_features(data.features)
    labels = load_labels(data.labels).align(files)
    val = split_for_files(files, load_labels(data.labels))
    return labels.subset(np.flatnonzero(val)), labels.subset(np.flatnonzero(~val))


def baselines(train, val) -> dict[str, float]:
    """Constant predictions fitted on the train split, scored on validation."""
    median_age = float(np.nanmedian(train.age))
    majority_male = train.male.mean() >= 0.5
    known = ~np.isnan(val.age)
    return {
        "median_mae": float(np.abs(val.age[known] - median_age).mean()),
        "majority_acc": float((val.male == majority_male).mean()),
    }


# --------------------------------------------------------------------------- features


def test_bottlenecks_output(data):
    with np.load(data.features) as npz:
        files, features, noflip = npz["files"], npz["features"], npz["features_noflip"]
        face_found, spec = npz["face_found"], json.loads(str(npz["spec"]))
        names = npz["feature_names"]
    assert len(files) == len(features) == len(face_found) == 480
    assert features.shape[1] == 1026 and features.dtype == np.float32
    assert list(names[-2:]) == ["gender_logit", "age_mean"]
    assert np.isfinite(features).all()
    # the live detector finds almost every dataset face
    assert face_found.mean() > 0.95
    assert spec["flip"] is True and spec["crop_margin"] == pytest.approx(0.2)
    assert spec["backbone_sha256"] and spec["feature_dim"] == 1026
    # mirrored faces give close, not identical features
    diff = np.abs(features - noflip).mean()
    assert 0 < diff < 0.5 * np.abs(noflip).mean()
    # the pretrained age expectation column is an age in years
    assert 5 < features[:, -1].mean() < 70


def test_bottlenecks_resume_skips_done_files(data):
    before = data.features.read_bytes()
    done = run_module("training.bottlenecks", "--backbone", str(data.backbone), "--labels", str(data.labels),
                      "--out", str(data.features), "--flip", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0 to do" in done.stdout
    with np.load(data.features) as a:
        import io

        with np.load(io.BytesIO(before)) as b:
            assert np.array_equal(a["features"], b["features"]) and np.array_equal(a["files"], b["files"])


# ----------------------------------------------------------------------------- splits


def test_split_is_deterministic_stratified_and_order_free():
    labels = load_labels()
    mask = validation_mask(labels, 0, 0.2)
    assert np.array_equal(mask, validation_mask(labels, 0, 0.2))
    assert not np.array_equal(mask, validation_mask(labels, 1, 0.2))
    assert abs(mask.mean() - 0.2) < 0.005
    keys = strata(labels)
    for key in np.unique(keys):
        rows = keys == key
        if rows.sum() >= 50:
            assert abs(mask[rows].mean() - 0.2) < 0.02, key
    # the same files in another order get the same split
    order = np.random.default_rng(0).permutation(len(labels))
    assert np.array_equal(validation_mask(labels.subset(order), 0, 0.2), mask[order])


def test_folds_are_stratified():
    labels = load_labels()
    rows = np.random.default_rng(1).choice(len(labels), 3000, replace=False)
    sub = labels.subset(np.sort(rows))
    folds = fold_ids(sub, 5, 0)
    assert np.array_equal(folds, fold_ids(sub, 5, 0))
    counts = np.bincount(folds, minlength=5)
    assert counts.min() > 0.9 * counts.max()
    for source in ("wiki", "utkface"):
        share = [(sub.source[folds == k] == source).mean() for k in range(5)]
        assert max(share) - min(share) < 0.05


# ------------------------------------------------------------------------------ heads


def test_fit_cli_writes_boosters_and_cv(data):
    heads_dir = fitted_heads("features")
    info = json.loads((heads_dir / "heads.json").read_text())
    assert (heads_dir / "gender.txt").is_file() and (heads_dir / "age.txt").is_file()
    assert info["feature_dim"] == 1026 and info["mode"] == "residual"
    assert info["split"]["used"] is True
    assert info["fit_rows"] < 480  # the validation split was held out
    for task in ("gender", "age"):
        assert info[task]["search"]["completed"] >= 1
        assert info[task]["num_boost_round"] >= 1
        assert set(info[task]["cv"]) >= {"all", "wiki", "utkface"}
    assert info["feature_spec"]["flip"] is True


def test_fit_reuses_hyperparameters_and_rounds_from_a_kept_record(data, tmp_path):
    # the CPU model's recipe refits heads with the default's record from docs/, kept under another name
    record = tmp_path / "heads-kept.json"
    shutil.copy(fitted_heads("features") / "heads.json", record)
    kept = json.loads(record.read_text())
    out = tmp_path / "refit"
    done = run_module("training.heads", "fit", "--features", str(data.features), "--labels", str(data.labels), "--out", str(out),
                      "--split", "--params-from", str(record), "--reuse-rounds", "--features-key", "features_noflip", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads((out / "heads.json").read_text())
    for task in ("gender", "age"):
        assert info[task]["num_boost_round"] == kept[task]["num_boost_round"]
        assert info[task]["search"]["params_from"] == str(record)
        assert {k: v for k, v in info[task]["params"].items() if k not in ("num_threads", "seed")} == \
            {k: v for k, v in kept[task]["params"].items() if k not in ("num_threads", "seed")}
    assert info["feature_spec"]["flip"] is False  # refitted on the other rows, not copied
    # what the exported model's provenance says of the choice
    assert HeadsRecord.from_json(info).tuning() == f"hyperparameters and round counts of {record} (no search, no CV)"
    assert HeadsRecord.from_json(kept).tuning() == "Optuna search + 3-fold CV"


def test_score_cli_prints_json_by_source(data):
    heads_dir = fitted_heads("features")
    done = run_module("training.heads", "score", "--heads", str(heads_dir), "--features", str(data.features),
                      "--labels", str(data.labels), "--table", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["subset"] == "val"
    for source in ("all", "wiki", "utkface"):
        m = result["metrics"][source]
        assert 0 <= m["gender_accuracy"] <= 1 and m["age_mae"] > 0
    assert result["metrics"]["all"]["n"] == result["metrics"]["wiki"]["n"] + result["metrics"]["utkface"]["n"]
    # the tables go to stderr, by gender, decade and race
    assert "age 20-29" in done.stderr and "race white" in done.stderr and "gender female" in done.stderr


def test_residual_heads_beat_constant_baselines(data):
    val, train = val_truth(data)
    base = baselines(train, val)
    m = score(fitted_heads("features"), data.features, data.labels)["metrics"]["all"]
    assert m["gender_accuracy"] > max(0.88, base["majority_acc"] + 0.25), (m, base)
    assert m["age_mae"] < 0.65 * base["median_mae"], (m, base)


def test_direct_heads_learn_and_shuffled_labels_do_not(data, tmp_path):
    """Fitted from a constant (no pretrained outputs to lean on), the boosters must learn
    gender and age from the embedding; the same code on shuffled labels must not.

    Both fit only the train split's faces (labels files holding just those rows) and are
    scored on the validation faces against their true labels.
    """
    val, train = val_truth(data)
    base = baselines(train, val)
    cfg = FitConfig(trials=2, timeout=120, folds=3, mode="direct", features_key="features_noflip")
    quiet = lambda *a, **k: None  # noqa: E731
    fit(data.features, data.train_labels, tmp_path / "real", cfg, log=quiet)
    fit(data.features, data.shuffled_labels, tmp_path / "shuffled", cfg, log=quiet)
    files, X, _ = load_features(data.features, "features_noflip")
    rows = np.array([np.flatnonzero(files == f)[0] for f in val.file])
    known = ~np.isnan(val.age)
    results = {}
    for name in ("real", "shuffled"):
        p, age = Heads.load(tmp_path / name).predict(X[rows])
        results[name] = {"acc": float(((p >= 0.5) == val.male).mean()), "mae": float(np.abs(age - val.age)[known].mean())}
    real, control = results["real"], results["shuffled"]
    assert real["acc"] > base["majority_acc"] + 0.2, (real, base)
    assert real["mae"] < 0.8 * base["median_mae"], (real, base)
    assert control["acc"] < 0.7, control
    assert control["mae"] > 0.9 * base["median_mae"], (control, base)
    assert control["mae"] > real["mae"] + 2.0, (real, control)


def test_cross_validation_with_fewer_folds_predicts_every_row(data):
    """The time budget may cut CV to fewer folds than the rows were split into."""
    from training.heads import cross_validate, load_dataset, make_tasks

    ds = load_dataset(data.features, data.labels)
    cfg = FitConfig(folds=5)
    gender, age, _ = make_tasks(ds, cfg, np.arange(len(ds.files)))
    params = {**age.base_params(cfg), "objective": "huber", "learning_rate": 0.1, "num_leaves": 7, "feature_fraction": 0.2}
    scores, oof, iterations = cross_validate(age, params, 3, log=lambda *a: None)
    assert len(iterations) == 3 and len(oof) == len(age.y)
    # the rows were re-folded for k=3: every row in exactly one validation fold, none empty
    folds = age.fold_ids(3)
    assert not np.array_equal(folds, age.folds)  # not the 5-fold assignment the rows came with
    assert folds.shape == (len(age.y),) and set(np.unique(folds)) == {0, 1, 2}
    assert np.bincount(folds, minlength=3).min() > 0
    # every row was predicted: cross_validate starts from NaN and fills each fold's rows
    assert np.isfinite(oof).all()
    assert scores["all"]["n"] == len(age.y)
    # and with real predictions: a fold left at a zero sentinel would show an error near
    # the mean age (~35 y); a single value may be any real number (a Huber regressor can
    # go below 0 for a young face), so no sign check
    for fold in range(3):
        rows = folds == fold
        assert np.abs(oof[rows] - age.y[rows]).mean() < 15, fold
    assert scores["all"]["mae"] < 12


def test_heads_predict_checks_feature_width(data):
    heads = Heads.load(fitted_heads("features"))
    with pytest.raises(ValueError, match="columns"):
        heads.predict(np.zeros((2, 100), np.float32))
    p, age = heads.predict(np.load(data.features)["features"][:5])
    assert p.shape == (5,) and age.shape == (5,) and ((0 <= p) & (p <= 1)).all()


# ----------------------------------------------------------- calibration, leave-one-out


def test_calibrate_cli_fits_on_out_of_fold_predictions(data, tmp_path):
    from training.calibrate import load_calibration

    heads_dir = tmp_path / "heads"
    shutil.copytree(fitted_heads("features"), heads_dir)  # the shared heads stay uncalibrated for export tests
    done = run_module("training.calibrate", "--heads", str(heads_dir), "--features", str(data.features),
                      "--labels", str(data.labels), "--folds", "3", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((heads_dir / "calibration.json").read_text())
    calibration = load_calibration(heads_dir)
    assert calibration is not None and all(s > 0 for s in calibration.slope)
    n_train = json.loads((heads_dir / "heads.json").read_text())["fit_rows"]
    assert result["train_out_of_fold"]["raw"]["n"] == n_train
    # fitted by likelihood on those predictions, the map cannot score worse on them
    oof = result["train_out_of_fold"]
    assert oof["calibrated"]["brier"] <= oof["raw"]["brier"] + 1e-9
    val = result["validation"]["calibrated"]
    assert val["n"] == 480 - n_train and 0 <= val["ece"] <= 1
    by_decade = result["validation_uncertain"]["calibrated"]["0.80"]
    assert 0 <= by_decade["all"]["confident_wrong_share"] <= by_decade["all"]["shown_share"] <= 1
    assert "ECE" in done.stdout


def test_leave_one_source_out_reports_every_fit_on_every_source(data, tmp_path):
    done = run_module("training.loso", "--features", str(data.features), "--heads", str(fitted_heads("features")),
                      "--labels", str(data.labels), "--out", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "loso.json").read_text())
    assert result["sources"] == ["utkface", "wiki"]
    for source in result["sources"]:
        fits = result["table"][source]
        assert set(fits) == {"pretrained backbone (no fitting)", "utkface", "wiki", "all sources (the heads as shipped)"}
        inside, outside = fits[source], fits["wiki" if source == "utkface" else "utkface"]
        gap = result["gaps"][source]
        assert gap["gender_accuracy_points"] == pytest.approx(100 * (inside["gender_accuracy"] - outside["gender_accuracy"]), abs=0.01)
        assert gap["age_mae_years"] == pytest.approx(outside["age_mae"] - inside["age_mae"], abs=1e-3)
    # the shipped heads' column is the same scoring as `training.heads score`
    scored = score(fitted_heads("features"), data.features, data.labels)
    for source in result["sources"]:
        assert result["table"][source]["all sources (the heads as shipped)"]["gender_accuracy"] == pytest.approx(
            scored["metrics"][source]["gender_accuracy"], abs=1e-4)  # score rounds to 4 places
    assert "| wiki |" in (tmp_path / "report.md").read_text()


def test_feature_files_join_by_rows_and_by_columns(data, tmp_path):
    import shutil

    from training.featuresets import join, join_columns

    rows = join([data.features, data.features], tmp_path / "rows.npz")
    files, X, spec = load_features(data.features)
    joined_files, joined, joined_spec = load_features(tmp_path / "rows.npz")
    assert rows["rows"] == 2 * len(files) and np.array_equal(joined[len(files):], X)
    assert np.array_equal(joined_files[: len(files)], files) and len(joined_spec["joined"]) == 2
    # the copies of a face fall in its fold: no booster scores a face it was fitted on
    labels = load_labels(data.labels).align(joined_files)
    folds = fold_ids(labels, 3, 0)
    assert np.array_equal(folds[: len(files)], folds[len(files):])
    assert np.array_equal(folds[: len(files)], fold_ids(load_labels(data.labels).align(files), 3, 0))

    stacked = join_columns([data.features, data.features], tmp_path / "columns.npz")
    _, S, stacked_spec = load_features(tmp_path / "columns.npz")
    assert stacked["feature_dim"] == 2 * X.shape[1] and np.array_equal(S[:, X.shape[1]:], X)
    assert stacked_spec["feature_dim"] == S.shape[1] and stacked_spec["head_features"]

    other = tmp_path / "other.npz"  # features of another backbone cannot be joined row-wise
    shutil.copy(data.features, other)
    arrays = dict(np.load(other))
    arrays["spec"] = np.array(json.dumps({**spec, "backbone_sha256": "0" * 64}))
    np.savez(other, **arrays)
    with pytest.raises(ValueError, match="backbone_sha256"):
        join([data.features, other], tmp_path / "bad.npz")


def test_augmented_extraction_degrades_training_faces_only(data, tmp_path):
    out = tmp_path / "aug.npz"
    done = run_module("training.bottlenecks", "--backbone", str(data.backbone), "--labels", str(data.labels), "--out", str(out),
                      "--subset", "train", "--augment", "face24,blur9", "--limit", "8", "--augment-seed", "3", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    files, X, spec = load_features(out)
    assert spec["augment"] == {"names": ["face24", "blur9"], "seed": 3}
    val = split_for_files(files, load_labels(data.labels))
    assert len(files) == 8 and not val.any()
    clean_files, clean, _ = load_features(data.features, "features_noflip")
    position = {f: i for i, f in enumerate(clean_files)}
    rows = clean[[position[f] for f in files]]
    # every face was degraded before the backbone saw it: no row equals its clean one
    assert not np.isclose(X, rows, atol=1e-4).all(axis=1).any()
    bad = run_module("training.bottlenecks", "--labels", str(data.labels), "--out", str(tmp_path / "x.npz"), "--augment", "fog")
    assert bad.returncode == 2 and "unknown degradation fog" in bad.stderr


@pytest.mark.parametrize("command", [["training.loso"], ["training.calibrate"], ["training.heads", "score"], ["training.heads", "fit"]])
def test_missing_heads_or_features_are_one_line_errors(command, data, tmp_path):
    heads_option = "--params-from" if command[-1] == "fit" else "--heads"
    out = ["--out", str(tmp_path / "out")] if command[-1] in ("training.loso", "fit") else []
    done = run_module(*command, heads_option, str(tmp_path / "none"), "--features", str(data.features), *out, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == f"error: no fitted heads in {tmp_path / 'none'} (no heads.json; write them with `python -m training.heads fit`)"
    done = run_module(*command, heads_option, str(fitted_heads("features")), "--features", str(tmp_path / "none.npz"), *out, timeout=60)
    assert done.returncode == 2 and done.stderr.strip() == f"error: no such features file: {tmp_path / 'none.npz'}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["not json", '{"gender": {"params": {}}}', "[1, 2]"])
def test_a_params_file_that_is_not_a_heads_record_is_a_one_line_error(text, data, tmp_path):
    record = tmp_path / "heads.json"
    record.write_text(text)
    done = run_module("training.heads", "fit", "--features", str(data.features), "--labels", str(data.labels),
                      "--out", str(tmp_path / "out"), "--params-from", str(record), timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {record} is not a heads record (")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
