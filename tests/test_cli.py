"""run_camera.py as a user runs it: outputs, bad input, shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from realtime.paths import ROOT
from tests.conftest import WALKING, WEBCAM, run_cli


def model_args(model_path):
    return ["--model", str(model_path)]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_info(path):
    cap = cv2.VideoCapture(str(path))
    n, fps = 0, cap.get(cv2.CAP_PROP_FPS)
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, fps


@pytest.fixture(scope="module")
def walking_outputs(tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("walking")
    proc = run_cli(
        "--source", str(WALKING), "--no-display", *model_args(model_path),
        "--output", str(out / "out.mp4"), "--events", str(out / "events.jsonl"),
        "--frames", str(out / "frames.jsonl"), "--summary", str(out / "summary.json"),
    )
    return proc, out


def test_walking_run_succeeds(walking_outputs):
    proc, _ = walking_outputs
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "CPUExecutionProvider" in proc.stderr  # providers are reported at start


def test_annotated_video_matches_the_input(walking_outputs):
    _, out = walking_outputs
    frames, fps = video_info(out / "out.mp4")
    assert frames == 41 and fps == pytest.approx(12.5, abs=0.01)


def test_events_are_one_per_person(walking_outputs):
    _, out = walking_outputs
    events = read_jsonl(out / "events.jsonl")
    assert len(events) == 3
    keys = {"track_id", "first_frame", "last_frame", "first_time", "last_time", "frames_seen", "frames_inferred", "age", "age_std", "gender", "gender_confidence"}
    for e in events:
        assert keys <= e.keys()
        assert e["age"] is not None and e["frames_inferred"] >= 2


def test_frames_file_has_every_frame_and_shown_values(walking_outputs):
    _, out = walking_outputs
    frames = read_jsonl(out / "frames.jsonl")
    assert [f["frame"] for f in frames] == list(range(41))
    assert max(len(f["faces"]) for f in frames) == 3
    face = frames[-1]["faces"][0]
    assert {"track_id", "box", "age", "gender", "gender_confidence"} <= face.keys()
    assert len(face["box"]) == 4


def test_summary(walking_outputs):
    _, out = walking_outputs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 41 and summary["tracks"] == 3
    assert summary["duration"] == pytest.approx(41 / 12.5, abs=0.01)
    assert summary["processing_fps"] > 0
    assert summary["execution_providers"] == ["CPUExecutionProvider"]
    assert summary["model"]["file"] and summary["model"]["version"]
    assert summary["interrupted"] is False


def test_max_frames(tmp_path, model_path):
    proc = run_cli("--source", str(WEBCAM), "--no-display", *model_args(model_path), "--max-frames", "30", "--output", str(tmp_path / "o.avi"), "--summary", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert video_info(tmp_path / "o.avi")[0] == 30
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 30


def test_image_folder_source(tmp_path, model_path, labels):
    import shutil

    from tests.conftest import FACES

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, row in enumerate(r for r in labels if r["source"] == "wiki"):
        if i == 5:
            break
        image = cv2.imread(str(FACES / row["file"]))
        # a portrait on a wider canvas: the detector needs some context
        canvas = cv2.copyMakeBorder(image, 80, 80, 120, 120, cv2.BORDER_REPLICATE)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), canvas)
    (folder / "notes.txt").write_text("not an image")
    proc = run_cli("--source", str(folder), "--no-display", *model_args(model_path), "--frames", str(tmp_path / "f.jsonl"))
    assert proc.returncode == 0, proc.stderr
    frames = read_jsonl(tmp_path / "f.jsonl")
    assert len(frames) == 5
    assert sum(len(f["faces"]) > 0 for f in frames) >= 4


BAD_INPUTS = [
    (["--source", "no/such/video.mp4"], "source not found"),
    (["--source", "pyproject.toml"], "not a readable video"),
    (["--source", "7"], "camera 7 could not be opened"),
    (["--source", "rtsp://127.0.0.1:9/stream"], "could not be opened"),
    (["--source", "http://127.0.0.1:9/video.mp4"], "could not be opened"),
    (["--source", str(WALKING), "--model", "no/such/model.onnx"], "model file not found"),
    (["--source", str(WALKING), "--device", "gpu9"], "invalid choice"),
    (["--source", str(WALKING), "--max-frames", "-3"], "positive integer"),
    (["--source", str(WALKING), "--min-confidence", "2"], "between 0 and 1"),
    (["--source", str(WALKING), "--gender-confidence", "0.3"], "from 0.5 up to"),
    (["--source", str(WALKING), "--output", "/no/such/dir/out.mp4"], "output folder does not exist"),
    (["--source", str(WALKING), "--output", "out.xyz"], "unsupported video format"),
    (["--source", str(WALKING), "--events", "/proc/version"], "cannot write /proc/version"),
    (["--source", str(WALKING), "--summary", "/"], "is a folder"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_clear_line(args, message, model_path):
    if "--model" not in args:
        args = args + model_args(model_path)
    proc = run_cli(*args, "--no-display", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, message)


def assert_one_error_line(stderr: str, message: str) -> None:
    """The failure is one line, the last one (progress lines may come before a late write error)."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert message in lines[-1], stderr
    assert sum("error" in line for line in lines) == 1, stderr


def test_cuda_without_gpu_is_a_clear_error(model_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the error path cannot be shown here")
    proc = run_cli("--source", str(WALKING), "--no-display", *model_args(model_path), "--device", "cuda", timeout=60)
    assert proc.returncode == 2 and "not available" in proc.stderr and "Traceback" not in proc.stderr


def broken_models(tmp_path, model_path):
    """A truncated file, a model without metadata, and a model whose input contradicts it."""
    import onnx
    from onnx import TensorProto, helper

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_path.read_bytes()[:4000])
    plain = onnx.load(str(model_path))
    del plain.metadata_props[:]
    no_meta = tmp_path / "no_metadata.onnx"
    onnx.save(plain, str(no_meta))
    # a real (tiny) model at 64x64 input carrying metadata that claims the shipped model's 224
    real = onnx.load(str(model_path))
    meta = {p.key: p.value for p in real.metadata_props}
    x = helper.make_tensor_value_info(meta["input_name"], TensorProto.FLOAT, ["N", 64, 64, 3])
    age = helper.make_tensor_value_info(meta["age_output"], TensorProto.FLOAT, ["N", 1])
    gender = helper.make_tensor_value_info(meta["gender_output"], TensorProto.FLOAT, ["N", 1])
    nodes = [
        helper.make_node("ReduceMean", [meta["input_name"]], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "ax"], [meta["age_output"]]),
        helper.make_node("Sigmoid", [meta["age_output"]], [meta["gender_output"]]),
    ]
    graph = helper.make_graph(nodes, "wrong", [x], [age, gender], [helper.make_tensor("ax", TensorProto.INT64, [1], [1])])
    wrong = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    wrong.ir_version = 8
    for k, v in meta.items():
        wrong.metadata_props.add(key=k, value=v)
    wrong_shape = tmp_path / "wrong_shape.onnx"
    onnx.save(wrong, str(wrong_shape))
    return {"cannot load model": truncated, "no usable age/gender metadata": no_meta, "does not match its metadata": wrong_shape}


def test_broken_models_are_refused(tmp_path, model_path):
    pytest.importorskip("onnx")
    for message, path in broken_models(tmp_path, model_path).items():
        proc = run_cli("--source", str(WALKING), "--no-display", "--model", str(path), timeout=60)
        assert proc.returncode == 2, (message, proc.stderr)
        assert_one_error_line(proc.stderr, message)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_leaves_complete_outputs(tmp_path, model_path, sig):
    out = tmp_path
    cmd = [
        sys.executable, str(ROOT / "run_camera.py"), "--source", str(WEBCAM), "--no-display", "--quiet",
        *model_args(model_path), "--output", str(out / "o.mp4"), "--events", str(out / "e.jsonl"),
        "--frames", str(out / "f.jsonl"), "--summary", str(out / "s.json"),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until frames are flowing, then interrupt mid-clip
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "f.jsonl").exists() and len((out / "f.jsonl").read_text().splitlines()) > 100:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "s.json").read_text())
    assert summary["interrupted"] is True
    assert 100 < summary["frames"] < 1337
    events = read_jsonl(out / "e.jsonl")
    assert len(events) == 1 and events[0]["last_frame"] == summary["frames"] - 1
    assert len(read_jsonl(out / "f.jsonl")) == summary["frames"]
    frames, fps = video_info(out / "o.mp4")
    assert frames == summary["frames"] and fps == pytest.approx(25.0)
