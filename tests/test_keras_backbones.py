"""Keras backbones (Inception v3, VGGFace) exported to ONNX, on real faces, random weights.

Each model is built and exported once per module (they are big on a 2-core CPU): shapes,
metadata, TF vs ONNX parity, preprocessing from metadata, bottleneck extraction, and a
tiny LightGBM fit fused with the Inception backbone running through AgeGenderModel.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.keras import EMBEDDING, INPUT, export_backbone
from export.metadata import read_metadata
from tests.conftest import FACES
from training.keras_backbones import SPECS, build_backbone, limit_threads, preprocess

limit_threads(2)
SEED = 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[object, Path, dict]]:
    """arch -> (Keras model, ONNX path, export report), random weights with a fixed seed."""
    out = tmp_path_factory.mktemp("keras_backbones")
    result = {}
    for arch in ("inception_v3", "vggface"):
        model = build_backbone(arch, None, SEED)
        path = out / f"{arch}.onnx"
        report = export_backbone(arch, "none", path, parity_faces=4, seed=SEED, model=model)
        result[arch] = (model, path, report)
    return result


@pytest.fixture(scope="module")
def face_crops(detector) -> np.ndarray:
    """Six real faces through the live detector and crop at 299 px (Inception's size)."""
    from export.faces import load_image, load_labels, sample_faces
    from training.facecrops import crop_for_model

    faces = sample_faces(load_labels(FACES), 3, seed=4)
    return np.stack([crop_for_model(load_image(f, FACES), detector, 299, 0.2).crop for f in faces])


@pytest.mark.parametrize("arch,dim", [("inception_v3", 2048), ("vggface", 512)])
def test_embedding_shapes(exported, arch, dim):
    model, path, _ = exported[arch]
    size = SPECS[arch].input_size
    assert tuple(model(np.zeros((2, size, size, 3), np.float32)).shape) == (2, dim)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == INPUT and out.name == EMBEDDING
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch" and [d.dim_value for d in in_dims[1:]] == [size, size, 3]
    assert out.type.tensor_type.shape.dim[1].dim_value == dim


def test_metadata(exported):
    meta = read_metadata(exported["inception_v3"][1])
    assert (meta.input_size, meta.layout, meta.channel_order) == (299, "NHWC", "RGB")
    assert meta.mean == (127.5, 127.5, 127.5) and meta.scale == pytest.approx(1 / 127.5)
    assert meta.embedding_output == EMBEDDING and meta.crop_margin == 0.2
    assert meta.gender_output == "" and meta.age_output == ""  # a backbone, no heads
    assert meta.license and meta.provenance and "random" in meta.training_data
    vgg = read_metadata(exported["vggface"][1])
    assert (vgg.input_size, vgg.channel_order, vgg.scale) == (224, "BGR", 1.0)
    assert vgg.mean == pytest.approx((93.5940, 104.7624, 129.1863))


def test_metadata_preprocessing_is_inceptions(exported, face_crops):
    """Our (pixel - mean) * scale with RGB order is keras' x / 127.5 - 1 on RGB."""
    import keras

    from training.backbones import OnnxBackbone

    backbone = OnnxBackbone(exported["inception_v3"][1], threads=2)
    rgb = face_crops[..., ::-1].astype(np.float32)
    expected = keras.applications.inception_v3.preprocess_input(rgb.copy())
    assert np.abs(backbone.preprocess(face_crops) - expected).max() < 1e-5
    assert np.abs(preprocess(face_crops, SPECS["inception_v3"]) - expected).max() < 1e-5


@pytest.mark.parametrize("arch", ["inception_v3", "vggface"])
def test_tf_onnx_parity_on_real_faces(exported, face_crops, arch):
    import cv2

    from training.backbones import OnnxBackbone

    model, path, report = exported[arch]
    assert report["parity"]["n"] == 4 and report["parity"]["relative"] < 1e-4
    spec = SPECS[arch]
    crops = np.stack([cv2.resize(c, (spec.input_size, spec.input_size), interpolation=cv2.INTER_AREA) for c in face_crops[:3]])
    reference = np.asarray(model(preprocess(crops, spec)))
    onnx_emb = OnnxBackbone(path, threads=2).embed(crops).embedding
    scale = np.abs(reference).max()
    assert scale > 0
    assert np.abs(onnx_emb - reference).max() < 1e-4 * scale


def write_labels(path: Path, n_per_source: int, seed: int) -> Path:
    """A labels.csv of real faces with absolute paths (images stay in the shared folder)."""
    with open(FACES / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    picked = []
    for source in ("wiki", "utkface"):
        pool = [r for r in rows if r["source"] == source and r["age"].strip()]
        picked += [{**pool[i], "file": str(FACES / pool[i]["file"])} for i in sorted(rng.choice(len(pool), n_per_source, replace=False))]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(picked[0]))
        writer.writeheader()
        writer.writerows(picked)
    return path


def test_bottlenecks_without_head_features(exported, tmp_path):
    from training.bottlenecks import extract, load_features

    labels = write_labels(tmp_path / "labels.csv", 4, seed=1)
    path = exported["inception_v3"][1]
    with pytest.raises(SystemExit, match="no-head-features"):
        extract(path, labels, tmp_path / "f.npz", head_features=True, progress=False, threads=2)
    extract(path, labels, tmp_path / "f.npz", head_features=False, progress=False, threads=2)
    files, features, spec = load_features(tmp_path / "f.npz")
    assert features.shape == (8, 2048) and np.isfinite(features).all()
    assert spec["input_size"] == 299 and spec["crop_margin"] == 0.2 and not spec["head_features"]


def test_fused_with_direct_heads_runs_at_299(exported, tmp_path, face_crops):
    """Inception features of 20 real faces -> direct-mode LightGBM heads -> fused ONNX ->
    AgeGenderModel on real 299 px crops, agreeing with LightGBM on the numpy features.

    20 faces: what is checked is the fused graph at 299 px, not the fit (random backbone
    weights); test_export_lightgbm.py checks fused boosters fitted on real features."""
    from export.lightgbm import fuse
    from realtime.model import AgeGenderModel
    from training.backbones import embed_features, load_backbone
    from training.bottlenecks import extract
    from training.heads import FitConfig, Heads, fit

    path = exported["inception_v3"][1]
    labels = write_labels(tmp_path / "labels.csv", 10, seed=2)
    features = tmp_path / "f.npz"
    extract(path, labels, features, head_features=False, progress=False, threads=2)
    heads_dir = tmp_path / "heads"
    cfg = FitConfig(trials=1, timeout=30, folds=2, mode="direct", threads=2)
    fit(features, labels, heads_dir, cfg, log=lambda *a, **k: None)
    heads = Heads.load(heads_dir)
    fused = fuse(onnx.load(str(path)), heads)
    from export.lightgbm import fused_metadata
    from export.metadata import write_metadata

    write_metadata(fused, fused_metadata(read_metadata(path), heads, {}, "test", path, "0" * 64))
    out = tmp_path / "fused.onnx"
    onnx.save(fused, str(out))

    model = AgeGenderModel.create(out, "cpu", threads=2)
    assert model.input_size == 299 and model.metadata.channel_order == "RGB"
    pred = model.predict(face_crops)
    p_ref, age_ref = heads.predict(embed_features(load_backbone(path, 2), face_crops, False, False))
    assert np.abs(pred.p_male - p_ref).max() < 1e-3
    assert np.abs(pred.age - age_ref).max() < 0.05


def test_backbone_without_heads_embeds_only(exported, face_crops):
    from training.backbones import OnnxBackbone

    backbone = OnnxBackbone(exported["inception_v3"][1], threads=2)
    assert not backbone.has_heads and backbone.input_size == 299
    emb = backbone.embed(face_crops[:2])
    assert emb.embedding.shape == (2, 2048) and emb.p_male is None and emb.age_probs is None


def test_vggface_weights_load_from_keras2_h5(tmp_path):
    """keras-vggface files are Keras 2 h5: model_weights/<layer>/<layer>/{kernel,bias}:0,
    with fc6..fc8 in the with-top file, which the pooled model skips."""
    import h5py

    source = build_backbone("vggface", None, seed=1)
    path = tmp_path / "rcmalli_vggface_tf_vgg16.h5"
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights")
        for layer in source.layers:
            group = root.create_group(layer.name)
            if layer.weights:
                inner = group.create_group(layer.name)
                for w in layer.weights:
                    inner.create_dataset(f"{w.name}:0", data=np.asarray(w))
        root.create_group("fc8").create_group("fc8").create_dataset("kernel:0", data=np.zeros((4, 2)))
    loaded = build_backbone("vggface", str(path), seed=2)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(SystemExit, match="not found"):
        build_backbone("vggface", str(tmp_path / "missing.h5"))
