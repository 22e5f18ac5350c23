"""export.lightgbm: backbone + LightGBM heads fused into one ONNX graph, on real faces.

Parity is checked here independently of the exporter's own check: the fused model's
outputs on real face crops against LightGBM's predictions on the features the numpy
pipeline (training.backbones) computes for the same crops.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from realtime.metadata import ModelMetadata
from realtime.model import AgeGenderModel
from realtime.paths import MODELS_DIR
from tests.heads_data import backbone_path, feature_set, fitted_heads, run_module
from training.backbones import embed_features, load_backbone
from training.heads import FitConfig, Heads, fit

SHIPPED = MODELS_DIR / "agegender.onnx"
needs_backbone = pytest.mark.skipif(backbone_path() is None, reason="no backbone model (models/faceres.onnx)")


def export(heads_dir: Path, out: Path, *extra: str) -> dict:
    data = feature_set()
    done = run_module(
        "export.lightgbm", "--backbone", str(data.backbone), "--heads", str(heads_dir), "--out", str(out),
        "--labels", str(data.labels), "--parity-faces", "12", "--check-faces", "4", *extra, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("{\n"):])


@pytest.fixture(scope="module")
def crops():
    """Real face crops from the sample's images, through the live detector and crop."""
    from export.lightgbm import make_crops
    from training.labels import DEFAULT_LABELS, load_labels

    files = load_labels(DEFAULT_LABELS).file
    picked = [str(files[i]) for i in np.sort(np.random.default_rng(3).choice(len(files), 20, replace=False))]
    # 224 px at margin 0.2: the faceres backbone's metadata, and so the fused models'
    return make_crops(DEFAULT_LABELS, picked, 224, 0.2)


@pytest.fixture(scope="module")
def fused_flip(tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "agegender.onnx"
    report = export(fitted_heads("features"), out)
    return out, report


def lightgbm_reference(heads_dir: Path, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heads = Heads.load(heads_dir)
    spec = heads.info["feature_spec"]
    features = embed_features(load_backbone(feature_set().backbone), crops, spec["head_features"], spec["flip"])
    return heads.predict(features)


def assert_parity(model_path: Path, heads_dir: Path, crops: np.ndarray) -> None:
    p_ref, age_ref = lightgbm_reference(heads_dir, crops)
    model = AgeGenderModel.create(model_path, "cpu", threads=2)
    pred = model.predict(crops)
    assert np.abs(pred.age - age_ref).max() < 0.05
    assert np.abs(pred.p_male - p_ref).max() < 1e-3
    # the heads really moved the pretrained outputs: not a constant model
    assert pred.age.std() > 3 and ((pred.p_male > 0.5).any() and (pred.p_male < 0.5).any())


@needs_backbone
def test_fused_flip_model_matches_lightgbm_on_real_faces(fused_flip, crops):
    path, report = fused_flip
    assert report["parity"]["max_abs_d_age"] < 0.05 and report["parity"]["max_abs_d_p_male"] < 1e-3
    assert report["feature_check"]["max_abs_diff"] < 1e-3
    assert_parity(path, fitted_heads("features"), crops)


@needs_backbone
def test_fused_metadata_is_valid_and_copies_the_backbone_preprocessing(fused_flip):
    path, _ = fused_flip
    model = onnx.load(str(path))
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    backbone = ModelMetadata.from_props({p.key: p.value for p in onnx.load(str(feature_set().backbone), load_external_data=False).metadata_props})
    assert meta.age_kind == "regression" and meta.gender_output == "p_male" and meta.age_output == "age"
    for field in ("input_size", "layout", "channel_order", "mean", "scale", "crop_margin"):
        assert getattr(meta, field) == getattr(backbone, field), field
    assert "training.heads fit" in meta.provenance and "export.lightgbm" in meta.provenance
    assert set(meta.metrics["validation"]) >= {"wiki", "utkface", "all"}
    assert meta.metrics["validation"]["wiki"]["gender_accuracy"] > 0.8
    assert meta.training_data
    onnx.checker.check_model(model, full_check=True)
    assert len({(o.domain or "", o.version) for o in model.opset_import}) == len(model.opset_import)


@needs_backbone
def test_fused_model_batch_one_equals_batch_n(fused_flip, crops):
    path, _ = fused_flip
    model = AgeGenderModel.create(path, "cpu", threads=2)
    together = model.predict(crops)
    alone = [model.predict(crops[i : i + 1]) for i in range(len(crops))]
    assert np.allclose(together.age, [a.age[0] for a in alone], atol=1e-3)
    assert np.allclose(together.p_male, [a.p_male[0] for a in alone], atol=1e-5)
    assert model.predict(crops[:0]).age.shape == (0,)


@needs_backbone
def test_fused_direct_noflip_model_matches_lightgbm(tmp_path, crops):
    """The other graph path: no mirror, trees from a constant (no init score)."""
    data = feature_set()
    cfg = FitConfig(trials=1, timeout=120, folds=2, mode="direct", split=True, features_key="features_noflip")
    fit(data.features, data.labels, tmp_path / "heads", cfg, log=lambda *a, **k: None)
    out = tmp_path / "direct.onnx"
    report = export(tmp_path / "heads", out)
    assert report["parity"]["max_abs_d_age"] < 0.05
    assert_parity(out, tmp_path / "heads", crops)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="models/agegender.onnx not built yet")
def test_shipped_model_loads_and_predicts(crops):
    model = AgeGenderModel.create(SHIPPED, "cpu", threads=2)
    meta = model.metadata
    assert meta.age_kind == "regression" and meta.crop_margin == pytest.approx(0.2)
    for source in ("wiki", "utkface"):
        assert meta.metrics["validation"][source]["gender_accuracy"] > 0.9
    pred = model.predict(crops)
    assert ((pred.age > 0) & (pred.age < 100)).all()
    alone = model.predict(crops[:1])
    assert abs(alone.age[0] - pred.age[0]) < 1e-3
