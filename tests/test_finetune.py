"""training.finetune: the faceres ONNX weights in Keras, and tiny fine-tunes exported to ONNX.

The fine-tunes are deliberately tiny (a few dozen real faces, one epoch): they check
that the pipeline (cached detector crops -> Keras training -> tf2onnx -> metadata ->
AgeGenderModel) holds together, not that the model gets better.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.metadata import read_metadata
from realtime.paths import MODELS_DIR
from tests.conftest import FACES
from training.keras_backbones import SPECS, limit_threads, preprocess

limit_threads(2)
FACERES = MODELS_DIR / "faceres.onnx"
needs_faceres = pytest.mark.skipif(not FACERES.is_file(), reason="models/faceres.onnx is missing")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Crop cache shared by the fine-tunes of this module (same faces, same crops)."""
    return tmp_path_factory.mktemp("crops")


@pytest.fixture(scope="module")
def real_crops(detector) -> np.ndarray:
    """Eight real faces through the live detector and crop, 224 px, margin 0.2."""
    from export.faces import load_image, load_labels, sample_faces
    from training.facecrops import crop_for_model

    faces = sample_faces(load_labels(FACES), 4, seed=7)
    return np.stack([crop_for_model(load_image(f, FACES), detector, 224, 0.2).crop for f in faces])


def test_onnx_weight_mapping_layouts():
    """Conv (O, I, kh, kw) -> (kh, kw, I, O); depthwise (C, 1, kh, kw) with its BN folded."""
    from training.keras_backbones import faceres_layer_order, onnx_layer_weights

    if not FACERES.is_file():
        pytest.skip("models/faceres.onnx is missing")
    layers = onnx_layer_weights(FACERES)
    assert len(layers) == len(faceres_layer_order()) == 30
    kinds = [k for k, _ in layers]
    assert kinds[0] == "conv" and kinds[1:27:2] == ["depthwise"] * 13 and kinds[2:27:2] == ["conv"] * 13
    assert kinds[27:] == ["dense"] * 3
    assert layers[0][1][0].shape == (3, 3, 3, 32)
    assert layers[1][1][0].shape == (3, 3, 32, 1) and layers[1][1][1].shape == (32,)
    assert layers[-1][1][0].shape == (256, 100) and layers[-2][1][1].shape == (1,)


@needs_faceres
def test_keras_faceres_reproduces_onnx_on_real_faces(real_crops):
    from export.parity import ort_runner
    from training.finetune import build_model

    model = build_model("faceres", separate_age_by_gender=False, faceres_path=FACERES)
    x = preprocess(real_crops, SPECS["faceres"])
    meta = read_metadata(FACERES)
    ref = ort_runner(FACERES, threads=2)(x)
    out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    emb = ref[meta.embedding_output]
    assert np.abs(out["embedding"] - emb).max() < 1e-4 * np.abs(emb).max()
    assert np.abs(out["p_male"].reshape(-1) - ref[meta.gender_output].reshape(-1)).max() < 1e-4
    ages = np.arange(100)
    assert np.abs(out["age_probs"] @ ages - ref[meta.age_output] @ ages).max() < 0.01


def finetune(tmp_path, cache, arch: str, limit: int, separate: bool = False, epochs: int = 1, init=None) -> dict:
    from training.finetune import FinetuneConfig, run
    from training.labels import DEFAULT_LABELS

    cfg = FinetuneConfig(arch=arch, epochs=epochs, batch_size=16, limit=limit, split=True, separate_age_by_gender=separate, parity_faces=4)
    out = tmp_path / (arch if init is None else arch + "-resumed")
    return run(DEFAULT_LABELS, out, cfg, cache=cache, faceres=FACERES, command="test", init_weights=init)


def test_training_batches_cover_every_row_once_and_mirror_about_half(real_crops):
    from training.finetune import shuffled_batches, training_batch

    rng = np.random.default_rng(0)
    batches = shuffled_batches(10, 4, rng)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(np.concatenate(batches).tolist()) == list(range(10))
    crops = np.repeat(real_crops[:1], 200, axis=0)
    x = training_batch(crops, np.arange(200), SPECS["faceres"], rng)
    plain, mirrored = preprocess(real_crops[:1], SPECS["faceres"])[0], preprocess(real_crops[:1, :, ::-1], SPECS["faceres"])[0]
    is_mirrored = np.array([np.array_equal(row, mirrored) for row in x])
    assert all(np.array_equal(row, plain) for row in x[~is_mirrored])
    assert 60 < is_mirrored.sum() < 140
    assert np.array_equal(crops[0], real_crops[0])  # the training crops themselves are never flipped in place


def check_runs(path, crops: np.ndarray, size: int) -> None:
    import cv2

    from realtime.model import AgeGenderModel

    model = AgeGenderModel.create(path, "cpu", threads=2)
    assert model.input_size == size and model.metadata.age_kind == "softmax"
    batch = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    pred = model.predict(batch)
    assert len(pred) == len(crops)
    assert np.all((pred.p_male >= 0) & (pred.p_male <= 1)) and np.all((pred.age >= 0) & (pred.age <= 99))
    assert np.isfinite(pred.age_std).all()


@needs_faceres
def test_tiny_faceres_finetune_exports_a_working_model(tmp_path, cache, real_crops):
    report = finetune(tmp_path, cache, "faceres", 64)
    assert report["train_faces"] + report["validation_faces"] == 64 and report["validation_faces"] > 0
    parity = report["metrics"]["parity_tf_vs_onnx"]
    assert parity["max_abs_p_male"] < 1e-3 and parity["max_abs_age"] < 0.05
    assert report["metrics"]["validation"]["age_mae"] is not None
    meta = read_metadata(report["out"])
    assert (meta.input_name, meta.input_size, meta.channel_order, meta.scale) == ("input_1", 224, "BGR", 1.0)
    assert meta.metrics["validation"]["n"] == report["validation_faces"]
    assert report["metrics"]["validation_mirror_averaged"]["mirror_averaged"] is True
    check_runs(report["out"], real_crops, 224)
    # every epoch leaves a checkpoint; exporting it with no more epochs gives the same model
    checkpoint = tmp_path / "faceres" / "checkpoint.weights.h5"
    resumed = finetune(tmp_path, cache, "faceres", 64, epochs=0, init=checkpoint)
    assert resumed["metrics"]["validation"] == report["metrics"]["validation"]
    assert "validation_before_training" not in resumed["metrics"]
    assert [h["epoch"] for h in resumed["history"]] == [1]  # the checkpoint's epoch, carried over
    assert "1 epochs" in read_metadata(resumed["out"]).provenance


@needs_faceres
def test_separate_age_by_gender_is_a_mixture(tmp_path, cache, real_crops):
    """The exported age distribution is P(male) * male head + (1 - P(male)) * female head."""
    from training.finetune import build_model

    report = finetune(tmp_path, cache, "faceres", 64, separate=True)
    assert {o.name for o in onnx.load(report["out"]).graph.output} == {"p_male", "age_probs", "embedding"}
    check_runs(report["out"], real_crops, 224)
    model = build_model("faceres", True, FACERES)
    model.load_weights(str(tmp_path / "faceres" / "keras.weights.h5"))
    out = {k: np.asarray(v, np.float64) for k, v in model(preprocess(real_crops[:4], SPECS["faceres"]), training=False).items()}
    p = out["p_male"]
    assert np.abs(out["age_probs"] - (p * out["age_probs_male"] + (1 - p) * out["age_probs_female"])).max() < 1e-6
    np.testing.assert_allclose(out["age_probs"].sum(1), 1.0, atol=1e-5)


def test_tiny_simple_cnn_from_scratch(tmp_path, cache, real_crops):
    report = finetune(tmp_path, cache, "simple_cnn", 32)
    meta = read_metadata(report["out"])
    assert (meta.input_size, meta.input_name) == (128, "image") and meta.scale == pytest.approx(1 / 127.5)
    check_runs(report["out"], real_crops, 128)


def test_missing_labels_is_a_one_line_error(tmp_path):
    from training.finetune import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--labels", str(tmp_path / "missing.csv")])
    assert "labels file not found" in str(exc.value)


def test_train_source_keeps_that_source_for_training_and_every_source_for_validation():
    from training.finetune import FinetuneConfig, select_rows
    from training.labels import load_labels

    labels = load_labels(FACES / "labels.csv")
    all_train, all_val = select_rows(labels, FinetuneConfig(split=True))
    wiki_train, wiki_val = select_rows(labels, FinetuneConfig(split=True, train_sources=("wiki",)))
    assert set(labels.source[wiki_train]) == {"wiki"}
    assert np.array_equal(wiki_train, all_train[labels.source[all_train] == "wiki"])
    assert np.array_equal(wiki_val, all_val) and set(labels.source[wiki_val]) == {"wiki", "utkface"}
    with pytest.raises(SystemExit, match="'imdb' is not a source"):
        select_rows(labels, FinetuneConfig(split=True, train_sources=("imdb",)))
