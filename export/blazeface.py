"""MediaPipe's BlazeFace `.tflite` files to ONNX, for the onnxruntime detector engine.

    python -m export.blazeface [--models-dir models] [--parity-faces 32]

Writes models/blazeface_full_range.onnx and models/blazeface_short_range.onnx from the
`.tflite` files `realtime.detectors.mediapipe` runs, converted by tf2onnx, with a free
batch axis (the point of the engine: many tiles in one run) and, in the file's metadata,
how the outputs are decoded (`BlazeFaceSpec`: input side, anchor grid, NMS threshold:
MediaPipe's graph options, which the `.tflite` files do not carry). Then both networks
run on real faces and the ONNX outputs must equal the TFLite ones (`--tol`).

The full-range file is "sparse": its weights are float16, stored in TFLite's sparse
format and expanded at load by DENSIFY operators, which tf2onnx cannot read. They are
expanded first by TFLite's own kernels (`densified`), giving a plain float16 model with
the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realtime.detectors.mediapipe import MODEL_FILES as TFLITE_FILES
from realtime.detectors.onnx_blazeface import (
    BOXES_OUTPUT,
    INPUT_NAME,
    MODEL_FILES,
    SCORES_OUTPUT,
    SPEC_KEY,
    BlazeFaceSpec,
)
from realtime.paths import MODELS_DIR

OPSET = 17
# MediaPipe's options for each network (face_detection_full_range.pbtxt,
# face_detection_short_range_common.pbtxt): one stride-4 layer of 48x48 cells with one
# anchor each; or strides 8, 16, 16, 16 at two anchors (aspect ratio 1 plus the
# interpolated scale) per layer: 16x16x2 + 8x8x6 = 896
SPECS: dict[str, BlazeFaceSpec] = {
    "full": BlazeFaceSpec(input_size=192, strides=(4,), anchors_per_cell=(1,), num_anchors=2304),
    "short": BlazeFaceSpec(input_size=128, strides=(8, 16, 16, 16), anchors_per_cell=(2, 2, 2, 2), num_anchors=896),
}
# float16 weights in both; measured largest |ONNX - TFLite| on real faces was about 1e-4
# on raw offsets of tens of pixels
TOLERANCE = 2e-3


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tflite_interpreter(path: Path):
    """TFLite's reference kernels, without the XNNPACK delegate (which takes the DENSIFY
    operators over and leaves their outputs unreadable)."""
    import tensorflow as tf

    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation and debug-option notices
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def densified(source: Path, out: Path) -> Path:
    """A copy of the model without DENSIFY operators: each sparse constant replaced by the
    dense tensor TFLite expands it to. A model without them is returned as it is."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    graph = model.subgraphs[0]
    densify = [op for op in graph.operators if codes[op.opcodeIndex] == schema.BuiltinOperator.DENSIFY]
    if not densify:
        return source
    interpreter = tflite_interpreter(source)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
    interpreter.invoke()
    for op in densify:
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(interpreter.get_tensor(op.outputs[0]).tobytes(), np.uint8)
        model.buffers.append(buffer)
        graph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
        # the sparse input is left unused; made dense too, so that no reader trips on it
        graph.tensors[op.inputs[0]].sparsity = None
        graph.tensors[op.inputs[0]].buffer = len(model.buffers) - 1
    graph.operators = [op for op in graph.operators if op not in densify]
    flatbuffer_utils.write_model(model, str(out))
    return out


def convert(source: Path, spec: BlazeFaceSpec):
    """The ONNX model: input `image` (batch, side, side, 3) RGB in [-1, 1]; outputs
    `regressors` (batch, anchors, 16) and `classificators` (batch, anchors, 1)."""
    import tf2onnx

    from export.optimize import optimize
    from export.tfjs import canonicalize_generated_names, make_batch_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        proto, _ = tf2onnx.convert.from_tflite(str(densified(source, Path(tmp) / "dense.tflite")), opset=OPSET)
    rename_io(proto, [INPUT_NAME], [BOXES_OUTPUT, SCORES_OUTPUT])
    free_reshape_batch(proto)
    make_batch_dynamic(proto)
    canonicalize_generated_names(proto)
    optimize(proto)  # checks the model too
    check_shapes(proto, spec)
    return proto


def rename_io(proto, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Name the graph's inputs and outputs (the two files call them differently)."""
    graph = proto.graph
    rename = {v.name: new for v, new in [*zip(graph.input, inputs), *zip(graph.output, outputs)]}
    for value in [*graph.input, *graph.output]:
        value.name = rename[value.name]
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]


def free_reshape_batch(proto) -> None:
    """The converted heads reshape to (1, -1, k); (0, -1, k) keeps whatever batch comes in."""
    from onnx import numpy_helper

    shapes = {node.input[1] for node in proto.graph.node if node.op_type == "Reshape"}
    for index, tensor in enumerate(proto.graph.initializer):
        value = numpy_helper.to_array(tensor)
        if tensor.name in shapes and value.ndim == 1 and len(value) == 3 and value[0] == 1 and value[1] == -1:
            proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.array([0, *value[1:]], value.dtype), tensor.name))


def check_shapes(proto, spec: BlazeFaceSpec) -> None:
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in [*proto.graph.input, *proto.graph.output]}
    expected = {
        INPUT_NAME: ["batch", spec.input_size, spec.input_size, 3],
        BOXES_OUTPUT: ["batch", spec.num_anchors, 16],
        SCORES_OUTPUT: ["batch", spec.num_anchors, 1],
    }
    if dims != expected:
        raise SystemExit(f"unexpected inputs/outputs {dims}, expected {expected}")


def write_props(proto, spec: BlazeFaceSpec, source: Path, command: str) -> None:
    import tf2onnx

    props = {
        SPEC_KEY: spec.to_json(),
        "source": source.name,
        "source_sha256": sha256_file(source),
        "license": "Apache-2.0 (MediaPipe; models/LICENSE.mediapipe)",
        "provenance": f"converted from {source.name} by `{command}` (tf2onnx {tf2onnx.__version__}, opset {OPSET})",
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def parity(source: Path, onnx_path: Path, spec: BlazeFaceSpec, n_faces: int) -> float:
    """Largest |ONNX - TFLite| over both raw outputs, on real faces fitted to the input."""
    import cv2
    import onnxruntime as ort

    from export.faces import load_image, load_labels, sample_faces

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    interpreter = tflite_interpreter(source)
    inp = interpreter.get_input_details()[0]["index"]
    outs = [d["index"] for d in sorted(interpreter.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)]
    worst = 0.0
    for face in sample_faces(load_labels(), max(1, n_faces // 2)):  # per source
        x = cv2.resize(load_image(face), (spec.input_size, spec.input_size))[None, ..., ::-1].astype(np.float32) / 127.5 - 1
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        expected = [interpreter.get_tensor(i) for i in outs]
        got = session.run([BOXES_OUTPUT, SCORES_OUTPUT], {INPUT_NAME: x})
        worst = max(worst, *(float(np.abs(g - e).max()) for g, e in zip(got, expected)))
    return worst


def export(model: str, models_dir: Path, n_faces: int, tol: float, command: str) -> dict:
    import onnx

    source = models_dir / TFLITE_FILES[model][0]
    out = models_dir / MODEL_FILES[model][0]
    spec = SPECS[model]
    proto = convert(source, spec)
    write_props(proto, spec, source, command)
    onnx.save(proto, str(out))
    report = {"model": model, "out": str(out), "bytes": out.stat().st_size, "sha256": sha256_file(out)}
    if n_faces:
        report["max_abs_diff"] = worst = parity(source, out, spec, n_faces)
        if worst > tol:
            raise SystemExit(f"{out}: ONNX differs from TFLite by {worst:.2g} (> {tol})")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.blazeface", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where the .tflite files are and the .onnx files go")
    parser.add_argument("--model", choices=sorted(SPECS), action="append", help="one network (repeatable; default both)")
    parser.add_argument("--parity-faces", type=int, default=32, help="real faces for the TFLite vs ONNX check (0: skip)")
    parser.add_argument("--tol", type=float, default=TOLERANCE, help="largest |difference| of raw outputs accepted")
    args = parser.parse_args(argv)
    command = "python -m export.blazeface"
    reports = [export(m, args.models_dir, args.parity_faces, args.tol, command) for m in args.model or sorted(SPECS)]
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
