"""export.optimize: relu6 chains become one Clip, and the outputs do not change.

The shipped backbone already has the Clips; the test undoes them into the exact form
tf2onnx writes (Relu -> Min(6) -> Max(0)) and checks that the rewrite restores them and
that both graphs give the same outputs on real faces, in float32 and in the float16
converter's form (Min and Max kept in float32 between Casts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from export.faces import load_image, load_labels, preprocess, sample_faces
from export.optimize import fuse_relu6, main, optimize
from export.parity import ort_runner
from realtime.metadata import ModelMetadata

MODELS = Path(__file__).resolve().parent.parent / "models"


def unfuse(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as tf2onnx writes it: every Clip(0, 6) back to Relu -> Min -> Max."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph = out.graph
    graph.initializer.extend(
        [numpy_helper.from_array(np.array([[[[6.0]]]], np.float32), "six"), numpy_helper.from_array(np.array([[[[0.0]]]], np.float32), "zero")]
    )
    nodes = []
    for node in graph.node:
        if node.op_type != "Clip":
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Relu", [x], [f"{y}/relu"], name=f"{node.name}/Relu"),
            helper.make_node("Min", [f"{y}/relu", "six"], [f"{y}/min"], name=f"{node.name}/Min"),
            helper.make_node("Max", [f"{y}/min", "zero"], [y], name=f"{node.name}/Max"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.fixture(scope="module")
def shipped() -> onnx.ModelProto:
    return onnx.load(str(MODELS / "faceres.onnx"))


@pytest.fixture(scope="module")
def faces(shipped: onnx.ModelProto) -> np.ndarray:
    meta = ModelMetadata.from_props({p.key: p.value for p in shipped.metadata_props})
    return preprocess([load_image(f) for f in sample_faces(load_labels(), 12, seed=3)], meta)


def test_shipped_models_have_no_chain_left() -> None:
    for name in ("faceres.onnx", "faceres-fp16.onnx", "agegender.onnx", "agegender-fp16.onnx", "agegender-cpu.onnx"):
        model = onnx.load(str(MODELS / name))
        assert ops(model).get("Clip", 0) >= 27, name
        assert "Min" not in ops(model) and "Max" not in ops(model), name
        assert fuse_relu6(model) == 0, name


def test_rewrite_restores_the_clips_and_keeps_outputs(shipped: onnx.ModelProto, faces: np.ndarray) -> None:
    chains = unfuse(shipped)
    assert ops(chains)["Min"] == ops(shipped)["Clip"]
    fused = onnx.ModelProto.FromString(chains.SerializeToString())
    removed = optimize(fused)
    assert removed == 2 * ops(shipped)["Clip"]
    assert ops(fused).get("Clip") == ops(shipped)["Clip"] and "Min" not in ops(fused)
    before, after = ort_runner(chains.SerializeToString(), threads=2)(faces), ort_runner(fused.SerializeToString(), threads=2)(faces)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, atol=1e-5, rtol=1e-5, err_msg=name)
    assert before["gender_pred/Sigmoid"].std() > 0.05  # real faces, not a constant output


@pytest.mark.filterwarnings("ignore::UserWarning")  # the converter notes each tiny weight it rounds
def test_float16_form_is_fused_exactly(shipped: onnx.ModelProto, faces: np.ndarray) -> None:
    pytest.importorskip("onnxconverter_common")
    from export.tfjs import to_fp16

    half = to_fp16(unfuse(shipped))
    assert ops(half)["Min"] > 0 and ops(half)["Cast"] > 2 * ops(half)["Min"]  # Min/Max kept in float32
    fused = onnx.ModelProto.FromString(half.SerializeToString())
    assert optimize(fused) == 4 * ops(half)["Min"]  # Cast, Min, Max, Cast per chain
    before, after = ort_runner(half.SerializeToString(), threads=2)(faces), ort_runner(fused.SerializeToString(), threads=2)(faces)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_a_chain_whose_middle_is_a_graph_output_is_kept() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    mid = helper.make_tensor_value_info("m", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Min", ["r", "six"], ["m"]), helper.make_node("Max", ["m", "zero"], ["y"])],
        "g", [x], [y, mid],
        [numpy_helper.from_array(np.array(6.0, np.float32), "six"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fuse_relu6(model) == 0 and len(model.graph.node) == 3


def test_cli_refuses_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err
