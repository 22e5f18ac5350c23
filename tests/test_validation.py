"""Issue 9, sections 0 and 6: every age the product outputs is a valid age, and values
that would hang or crash a run are refused at once (exit 2, one line on stderr).

The command-line cases run run_camera.py as a subprocess on a real video with a frame
limit, so a value that is not refused either runs to the end (exit 0: the test fails)
or hangs until the subprocess timeout (the test fails). The model cases use small real
ONNX graphs built with onnx.helper, carrying the same metadata contract as the shipped
models, fed real face images from ../shared.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.faces import load_image, load_labels, sample_faces
from realtime.errors import ModelError, UserError
from realtime.metadata import AGE_RANGE, ModelMetadata
from realtime.model import AgeGenderModel
from realtime.paths import MODELS_DIR
from run_camera import build_parser, check_option_combinations
from tests.conftest import WEBCAM, run_cli

SIZE = 32  # side of the small test models' input
# a parse error exits before anything loads; the slowest refusals (tile size, model
# metadata) import the detector and onnxruntime first. A hang ends at the timeout.
QUICK_S = 60


def refused(proc, started: float) -> str:
    """The one stderr line of a run that was refused with exit 2."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < QUICK_S
    return lines[0]


def cli(*args: str) -> str:
    """The one error line of run_camera.py on a real video with `args` (which must be refused)."""
    started = time.monotonic()
    proc = run_cli("--source", str(WEBCAM), "--no-display", "--quiet", "--max-frames", "3", *args, timeout=QUICK_S)
    return refused(proc, started)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Real face images, whole image as the crop, at the small models' input size (BGR uint8)."""
    images = [load_image(f) for f in sample_faces(load_labels(), 30, seed=5)]
    return np.stack([cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for image in images])


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    "args, mentions",
    [
        (["--track-timeout", "inf"], "--track-timeout"),  # crashed the tracker (OverflowError, exit 1)
        (["--track-timeout", "1e300"], "track timeout"),  # beyond the tracker's range
        (["--folder-fps", "inf"], "--folder-fps"),
        (["--folder-fps", "1e-300"], "--folder-fps"),  # frame times index / fps became infinite
        (["--tile-size", "1"], "192 px"),  # hung: 300,000 detector passes per frame
        (["--detector", "short", "--tile-size", "100"], "128 px"),  # the short-range model's input
    ],
)
def test_values_that_hang_or_crash_are_refused(args: list[str], mentions: str) -> None:
    line = cli(*args)
    assert mentions in line


@pytest.mark.parametrize(
    "args",
    [["--track-timeout", "nan"], ["--min-confidence", "nan"], ["--min-dwell", "nan"], ["--min-glance", "inf"], ["--retention-days", "inf"]],
)
def test_nan_and_inf_stay_refused_everywhere(args: list[str]) -> None:
    """These were refused before issue 9 too (by `not value > 0`-style tests); kept so that
    a rewrite of the argument types cannot let them through."""
    line = cli(*args)
    assert args[0] in line


@pytest.mark.parametrize(
    "args, needs",
    [
        (["--dashboard"], "--kiosk"),
        (["--data-dir", "{tmp}/store"], "--kiosk"),
        (["--dashboard-host", "0.0.0.0", "--dashboard-port", "9000"], "--kiosk"),
        (["--min-dwell", "5", "--min-glance", "1", "--retention-days", "7", "--age-brackets", "20,40"], "--kiosk"),
        (["--dashboard-token", "secret"], "--kiosk"),
        (["--kiosk", "--data-dir", "{tmp}/store", "--dashboard-port", "9000"], "--dashboard"),
    ],
)
def test_options_without_their_mode_are_refused_not_ignored(args: list[str], needs: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    line = cli(*args)
    flags = [a for a in args if a.startswith("--") and a not in ("--kiosk", "--data-dir")] or ["--data-dir"]
    assert line.endswith((f"need {needs}", f"needs {needs}")), line
    assert all(flag in line for flag in flags), line
    assert not (tmp_path / "store").exists()  # refused before the kiosk's store was created


def test_valid_combinations_pass_the_check(tmp_path: Path) -> None:
    """The check refuses only what it should: defaults, full kiosk options, the smallest tile."""
    parser = build_parser()
    for argv in (
        [],
        ["--tile-size", "192", "--track-timeout", "3600", "--folder-fps", "0.001"],
        ["--detector", "short", "--tile-size", "128"],
        ["--kiosk", "--data-dir", str(tmp_path), "--dashboard", "--dashboard-port", "0", "--min-dwell", "3"],
        ["--dashboard-port", "8765"],  # the default value changes nothing
    ):
        check_option_combinations(parser.parse_args(argv))
    with pytest.raises(UserError, match="192"):
        check_option_combinations(parser.parse_args(["--tile-size", "191"]))


# ------------------------------------------------------------------ small real models


def metadata(**changes: object) -> ModelMetadata:
    base = ModelMetadata(
        name="tiny-test", version="1", input_name="image", input_size=SIZE, layout="NHWC", channel_order="BGR",
        mean=(0.0, 0.0, 0.0), scale=1.0, gender_output="p_male", age_output="age", age_kind="regression", crop_margin=0.4,
    )
    return ModelMetadata(**{**base.__dict__, **changes})


def tiny_model(
    path: Path,
    age_offset: float,
    props: dict[str, str] | None = None,
    input_dims: list[int | str] | None = None,
    fail_at_run: bool = False,
) -> Path:
    """age = mean pixel / 10 + age_offset, p_male = sigmoid(mean pixel / 100 - 1).

    A face's mean pixel is 0-255, so the raw age is age_offset + 0..25.5: an offset of -40
    is negative for every face. `fail_at_run` first reshapes the batch to (N, 7, -1),
    which no SIZE x SIZE x 3 image fills; the shape is computed from the input, so the
    graph loads and fails only when run.
    """
    nodes, inits = [], [
        numpy_helper.from_array(np.array([[0.1]], np.float32), "age_scale"),
        numpy_helper.from_array(np.array([[age_offset]], np.float32), "age_offset"),
        numpy_helper.from_array(np.array([[0.01]], np.float32), "p_scale"),
        numpy_helper.from_array(np.array([[-1.0]], np.float32), "p_offset"),
        numpy_helper.from_array(np.array([-1, SIZE * SIZE * 3], np.int64), "flat"),
    ]
    source = "image"
    if fail_at_run:
        inits += [
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([7, -1], np.int64), "sevens"),
        ]
        nodes += [
            helper.make_node("Shape", ["image"], ["shape"]),
            helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
            helper.make_node("Concat", ["batch", "sevens"], ["impossible"], axis=0),
            helper.make_node("Reshape", ["image", "impossible"], ["odd"]),
        ]
        source = "odd"
    nodes += [
        helper.make_node("Reshape", [source, "flat"], ["rows"]),
        helper.make_node("ReduceMean", ["rows"], ["mean"], axes=[1], keepdims=1),  # (N, 1)
        helper.make_node("Mul", ["mean", "age_scale"], ["age_scaled"]),
        helper.make_node("Add", ["age_scaled", "age_offset"], ["age"]),
        helper.make_node("Mul", ["mean", "p_scale"], ["p_scaled"]),
        helper.make_node("Add", ["p_scaled", "p_offset"], ["p_logit"]),
        helper.make_node("Sigmoid", ["p_logit"], ["p_male"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_dims or ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("age", TensorProto.FLOAT, ["N", 1]), helper.make_tensor_value_info("p_male", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    for key, value in {**metadata().to_props(), **(props or {})}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def raw_ages(path: Path | bytes, faces: np.ndarray) -> np.ndarray:
    source = path if isinstance(path, bytes) else str(path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(["age"], {"image": faces.astype(np.float32)})[0].reshape(-1)


@pytest.mark.parametrize("offset", [-40.0, 140.0])
def test_served_ages_are_clipped_for_any_model(tmp_path: Path, faces: np.ndarray, offset: float) -> None:
    """A model without a clip in its graph (as exported before) still yields ages in range."""
    path = tiny_model(tmp_path / "raw.onnx", offset)
    raw = raw_ages(path, faces)
    assert ((raw < AGE_RANGE[0]) | (raw > AGE_RANGE[1])).all()  # the graph itself is out of range
    pred = AgeGenderModel.create(path, "cpu").predict(faces)
    assert np.array_equal(pred.age, np.clip(raw, *AGE_RANGE).astype(np.float32))
    assert pred.age.dtype == np.float32 and ((pred.p_male > 0) & (pred.p_male < 1)).all()


def test_served_ages_in_range_are_unchanged(tmp_path: Path, faces: np.ndarray) -> None:
    path = tiny_model(tmp_path / "ok.onnx", 20.0)
    raw = raw_ages(path, faces)
    assert raw.std() > 1  # ages that follow the faces, not a constant
    np.testing.assert_array_equal(AgeGenderModel.create(path, "cpu").predict(faces).age, raw)


def test_clip_age_puts_the_graph_output_in_range(tmp_path: Path, faces: np.ndarray) -> None:
    from export.optimize import clip_age

    model = onnx.load(str(tiny_model(tmp_path / "m.onnx", -40.0)))
    assert clip_age(model, "age") and not clip_age(model, "age")  # added once, then recognised
    onnx.checker.check_model(model)
    clipped = raw_ages(model.SerializeToString(), faces)
    np.testing.assert_array_equal(clipped, np.zeros_like(clipped))
    in_range = onnx.load(str(tiny_model(tmp_path / "ok.onnx", 20.0)))
    before = raw_ages(in_range.SerializeToString(), faces)
    clip_age(in_range, "age")
    np.testing.assert_array_equal(raw_ages(in_range.SerializeToString(), faces), before)


@pytest.mark.parametrize("name", ["agegender.onnx", "agegender-fp16.onnx", "agegender-cpu.onnx"])
def test_shipped_models_end_in_the_age_clip(name: str) -> None:
    model = onnx.load(str(MODELS_DIR / name))
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    producer = next(n for n in model.graph.node if meta.age_output in n.output)
    assert producer.op_type == "Clip"
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert (float(values[producer.input[1]]), float(values[producer.input[2]])) == AGE_RANGE
    assert "age output clipped" in meta.provenance


def lightgbm_heads(features: np.ndarray, ages: np.ndarray, males: np.ndarray):
    """Direct-mode heads as training.heads fits them; the age booster is fitted to ages 35
    years lower, so that its raw predictions go below 0 for many faces."""
    import lightgbm as lgb

    from training.heads import Heads

    params = {"verbosity": -1, "num_threads": 1, "min_data_in_leaf": 5, "num_leaves": 7, "seed": 0}
    age = lgb.train({**params, "objective": "regression"}, lgb.Dataset(features, ages - 35.0), num_boost_round=30)
    gender = lgb.train({**params, "objective": "binary"}, lgb.Dataset(features, males.astype(float)), num_boost_round=30)
    info = {"feature_dim": features.shape[1], "mode": "direct", "feature_spec": {}, "init_columns": {}}
    return Heads(info, gender, age)


def tiny_backbone() -> onnx.ModelProto:
    """image (N, SIZE, SIZE, 3) -> an 8-d embedding: a fixed random projection of the pixels."""
    weights = np.random.default_rng(0).normal(size=(SIZE * SIZE * 3, 8)).astype(np.float32) / 255.0
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "flat"], ["rows"]), helper.make_node("MatMul", ["rows", "w"], ["embedding"])],
        "backbone",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(np.array([-1, SIZE * SIZE * 3], np.int64), "flat"), numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in metadata(embedding_output="embedding", age_kind="softmax", age_output="ages", gender_output="p").to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def test_heads_and_fused_export_clip_the_age(faces: np.ndarray) -> None:
    """training.heads and the graph export.lightgbm fuses give the same clipped ages."""
    from export.lightgbm import OUTPUT_AGE, OUTPUT_P_MALE, fuse
    from training.heads import predict_task

    labelled = sample_faces(load_labels(), 30, seed=5)  # the faces fixture, in its order
    ages = np.array([f.age if f.age is not None else 35 for f in labelled], np.float64)
    males = np.array([f.male for f in labelled])
    backbone = tiny_backbone()
    pixels = faces.astype(np.float32)
    features = ort.InferenceSession(backbone.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": pixels})[0]
    heads = lightgbm_heads(features, ages, males)
    raw = heads.age.predict(features, raw_score=True)
    assert (raw < 0).sum() > 5 and (raw > 0).sum() > 5  # the trees really go below 0

    p_ref, age_ref = heads.predict(features)
    np.testing.assert_array_equal(age_ref, np.clip(raw, *AGE_RANGE))
    np.testing.assert_array_equal(predict_task("age", heads.age, features, None), age_ref)

    fused = fuse(backbone, heads)
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    age, p_male = session.run([OUTPUT_AGE, OUTPUT_P_MALE], {"image": pixels})
    assert age.min() == AGE_RANGE[0]
    np.testing.assert_allclose(age.reshape(-1), age_ref, atol=1e-3)
    np.testing.assert_allclose(p_male.reshape(-1), p_ref, atol=1e-5)


# ------------------------------------------------------------------ model metadata and warm-up


@pytest.mark.parametrize(
    "props, dims, reason",
    [
        ({"input_size": "0"}, ["N", "H", "W", 3], "input_size 0"),
        ({"input_size": "20000"}, ["N", 20000, 20000, 3], "input_size 20000"),  # 4.8 GB per warm-up batch
        ({"input_size": "-5"}, ["N", "H", "W", 3], "input_size -5"),
        ({"input_size": "32.5"}, ["N", "H", "W", 3], "input_size 32.5"),
        ({"mean": "[NaN, 0, 0]"}, None, "mean"),
        ({"mean": "[0, 0]"}, None, "mean"),
        ({"scale": "Infinity"}, None, "scale"),
        ({"layout": "NHCW"}, None, "layout"),
        ({"channel_order": "BGRA"}, None, "channel_order"),
    ],
)
def test_absurd_metadata_is_refused_before_anything_is_allocated(tmp_path: Path, props: dict, dims: list | None, reason: str) -> None:
    path = tiny_model(tmp_path / "absurd.onnx", 20.0, props=props, input_dims=dims)
    with pytest.raises(ModelError) as caught:
        AgeGenderModel.create(path, "cpu")
    message = str(caught.value)
    assert reason in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("channels", [1, 5])
def test_an_input_without_three_channels_is_refused(tmp_path: Path, channels: int) -> None:
    """The metadata contract is 3 colour channels (BGR or RGB); check_io already compared
    the declared input with it before issue 9, and still must."""
    path = tiny_model(tmp_path / "channels.onnx", 20.0, input_dims=["N", SIZE, SIZE, channels])
    with pytest.raises(ModelError, match="does not match its metadata"):
        AgeGenderModel.create(path, "cpu")


def test_absurd_metadata_on_the_command_line(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "huge.onnx", 20.0, props={"input_size": "20000"}, input_dims=["N", 20000, 20000, 3])
    line = cli("--model", str(path))
    assert str(path) in line and "input_size 20000" in line


def test_a_model_that_fails_on_its_first_run_is_refused_by_name(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "broken.onnx", 20.0, fail_at_run=True)
    with pytest.raises(ModelError, match="fails on a test input"):
        AgeGenderModel.create(path, "cpu")
    line = cli("--model", str(path))
    assert line.startswith("error: model ") and str(path) in line and "fails on a test input" in line


def test_frames_and_events_of_an_out_of_range_model_hold_valid_ages(tmp_path: Path) -> None:
    """Events and frames follow the model runner's clip: no negative age reaches a file."""
    path = tiny_model(tmp_path / "young.onnx", -40.0)
    events, frames = tmp_path / "events.jsonl", tmp_path / "frames.jsonl"
    proc = run_cli(
        "--source", str(WEBCAM), "--model", str(path), "--no-display", "--quiet", "--max-frames", "40",
        "--events", str(events), "--frames", str(frames), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = [face["age"] for line in frames.read_text().splitlines() for face in json.loads(line)["faces"] if face.get("age") is not None]
    assert shown and min(shown) == AGE_RANGE[0]
    for line in events.read_text().splitlines():
        event = json.loads(line)
        age = event.get("age")
        assert age is None or AGE_RANGE[0] <= age <= AGE_RANGE[1], event
