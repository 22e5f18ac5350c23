"""Graph rewrites that make converted models cheaper for ONNX Runtime, outputs unchanged.

    python -m export.optimize models/agegender.onnx models/faceres.onnx [--check-faces 64]

tf2onnx turns each Keras/TFJS `relu6` into three nodes, Relu -> Min(6) -> Max(0).
ONNX Runtime fuses a Conv with a following Relu or Clip into one kernel, but not with
Min and Max, so every MobileNet layer wrote and re-read its whole activation tensor
twice more. One Clip(0, 6) computes exactly the same values and fuses into the Conv:
on the 2-core development CPU the default model ran 1.18x faster at batch 1 and 2.01x
at batch 32, and batches stopped getting slower per face (docs/benchmarks.md).

Every exporter calls `optimize` before writing; the command line rewrites files that
were exported before the rewrite existed, checks on real faces that the outputs did not
change, and records the rewrite in the model's provenance.

The command line also clips a regression age output to `realtime.metadata.AGE_RANGE`
(`clip_age`, which export.lightgbm applies to every graph it fuses): a regressor
extrapolates (a Huber head predicted -1.07 years for a young face), and a file exported
before the clip existed should not give such ages to whoever runs it. Only ages outside
the range change, which the check on real faces confirms.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from realtime.metadata import AGE_RANGE, ModelMetadata

PROVENANCE_NOTE = "Relu-Min-Max chains fused to Clip (export.optimize)"
AGE_CLIP_NOTE = f"age output clipped to {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years (export.optimize)"
# the rewrite is exact; what differs is only the fused kernel's rounding (measured 7.6e-6
# on the float32 models, 0 on the float16 ones)
TOLERANCE = 1e-4


def _scalar_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer if int(np.prod(t.dims)) == 1}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.size == 1:
                found[node.output[0]] = value
    return found


def _only_consumer(consumers: dict[str, list[onnx.NodeProto]], tensor: str, op: str) -> onnx.NodeProto | None:
    users = consumers.get(tensor, [])
    return users[0] if len(users) == 1 and users[0].op_type == op else None


def _other_input(node: onnx.NodeProto, tensor: str, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    others = [i for i in node.input if i != tensor]
    return constants[others[0]] if len(node.input) == 2 and len(others) == 1 and others[0] in constants else None


def fuse_relu6(model: onnx.ModelProto) -> int:
    """Replace every Relu -> Min(hi) -> Max(lo) chain with Clip(max(lo, 0), hi), in place.

    Applies only where the intermediate tensors have no other consumer and are no graph
    output, so no value the graph exposes changes. Returns the number of chains fused.
    """
    graph = model.graph
    constants = _scalar_constants(graph)
    exposed = {o.name for o in graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    chains: dict[int, tuple[str, float, float, np.dtype]] = {}
    absorbed: set[int] = set()
    for relu in graph.node:
        chain = _relu6_chain(relu, consumers, constants, exposed)
        if chain is not None:
            nodes, output, low, high, dtype = chain
            chains[id(relu)] = (output, low, high, dtype)
            absorbed.update(id(n) for n in nodes)

    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in absorbed:
            continue
        if id(node) not in chains:
            rewritten.append(node)
            continue
        output, low, high, dtype = chains[id(node)]
        name = node.name or node.output[0]
        bounds = [f"{name}/clip_min", f"{name}/clip_max"]
        graph.initializer.extend(
            [numpy_helper.from_array(np.array(v, dtype=dtype), b) for v, b in zip((low, high), bounds)]
        )
        rewritten.append(helper.make_node("Clip", [node.input[0], *bounds], [output], name=f"{name}/relu6"))
    del graph.node[:]
    graph.node.extend(rewritten)
    _drop_unused_initializers(graph)
    return len(chains)


def _relu6_chain(
    relu: onnx.NodeProto,
    consumers: dict[str, list[onnx.NodeProto]],
    constants: dict[str, np.ndarray],
    exposed: set[str],
) -> tuple[list[onnx.NodeProto], str, float, float, np.dtype] | None:
    """The nodes after `relu` that one Clip replaces, its output, bounds and dtype.

    Matches Relu -> Min(hi) -> Max(lo), and the float16 converter's version of it,
    Relu -> Cast(float32) -> Min -> Max -> Cast(float16) (it keeps Min and Max in float32):
    0 and 6 are exact in float16, so one float16 Clip gives the same values there too.
    """
    if relu.op_type != "Relu" or relu.output[0] in exposed:
        return None
    tensor, absorbed = relu.output[0], []
    up = _only_consumer(consumers, tensor, "Cast")
    if up is not None:
        tensor = up.output[0]
        absorbed.append(up)
    low_cap = _only_consumer(consumers, tensor, "Min")
    floor = None if low_cap is None else _only_consumer(consumers, low_cap.output[0], "Max")
    if floor is None:
        return None
    high = _other_input(low_cap, tensor, constants)
    low = _other_input(floor, low_cap.output[0], constants)
    if high is None or low is None:
        return None
    low_value, high_value = float(low.reshape(-1)[0]), float(high.reshape(-1)[0])
    if low_value > high_value:
        return None
    absorbed += [low_cap, floor]
    output, dtype = floor.output[0], high.dtype
    if up is not None:
        down = _only_consumer(consumers, floor.output[0], "Cast")
        if down is None:
            return None
        absorbed.append(down)
        output = down.output[0]
        dtype = helper.tensor_dtype_to_np_dtype(helper.get_attribute_value(down.attribute[0]))
    # every absorbed tensor but the chain's last output disappears: none may be a graph output
    if any(n.output[0] in exposed for n in absorbed[:-1]):
        return None
    return absorbed, output, max(low_value, 0.0), high_value, np.dtype(dtype)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name in used]
    kept.sort(key=lambda t: t.name)  # a stable order keeps exports byte-for-byte reproducible
    del graph.initializer[:]
    graph.initializer.extend(kept)


def clip_age(model: onnx.ModelProto, age_output: str) -> bool:
    """Clamp the age output (years) to AGE_RANGE with a Clip at the end of the graph, in place.

    The node that produced the output now writes `<age_output>/unclipped`. A graph whose
    output already comes from this Clip is left alone. Returns whether a Clip was added.
    """
    graph = model.graph
    declared = {o.name: o for o in graph.output}
    producer = next((n for n in graph.node if age_output in n.output), None)
    if age_output not in declared or producer is None:
        raise ValueError(f"the graph computes no output named {age_output!r}")
    bounds = [f"{age_output}/clip_min", f"{age_output}/clip_max"]
    if producer.op_type == "Clip" and list(producer.input[1:]) == bounds:
        return False
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        raise ValueError(f"clipping the age needs opset 11 or later (Clip with bound inputs); the graph has {opset}")
    raw = f"{age_output}/unclipped"
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == age_output:
                    names[i] = raw
    dtype = helper.tensor_dtype_to_np_dtype(declared[age_output].type.tensor_type.elem_type)
    graph.initializer.extend([numpy_helper.from_array(np.array(v, dtype=dtype), b) for v, b in zip(AGE_RANGE, bounds)])
    graph.node.append(helper.make_node("Clip", [raw, *bounds], [age_output], name=f"{age_output}/clip"))
    return True


def optimize(model: onnx.ModelProto) -> int:
    """All rewrites of this module, in place; the number of nodes removed."""
    before = len(model.graph.node)
    fuse_relu6(model)
    onnx.checker.check_model(model)
    return before - len(model.graph.node)


# ----------------------------------------------------------------------------- CLI


def check_outputs(before: bytes, after: bytes, meta: ModelMetadata, faces: int) -> dict[str, float]:
    """Largest output differences between the two graphs on real face crops."""
    from export.faces import load_image, load_labels, preprocess, sample_faces
    from export.parity import ort_runner

    batch = preprocess([load_image(f) for f in sample_faces(load_labels(), max(1, faces // 2))], meta)
    old, new = ort_runner(before)(batch), ort_runner(after)(batch)
    return {name: float(np.max(np.abs(old[name] - new[name]))) for name in old}


def optimize_file(path: Path, faces: int) -> str:
    from export.metadata import write_metadata

    before = path.read_bytes()
    model = onnx.load_from_string(before)
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    removed = optimize(model)
    clipped = meta.age_kind == "regression" and bool(meta.age_output) and clip_age(model, meta.age_output)
    if removed == 0 and not clipped:
        return f"{path}: nothing to rewrite"
    onnx.checker.check_model(model)
    notes = [note for note, done in ((PROVENANCE_NOTE, removed), (AGE_CLIP_NOTE, clipped)) if done and note not in meta.provenance]
    if notes:
        write_metadata(model, dataclasses.replace(meta, provenance="; ".join([meta.provenance, *notes])))
    after = model.SerializeToString()
    differences = check_outputs(before, after, meta, faces) if faces else {}
    worst = max(differences.values(), default=0.0)
    if worst > TOLERANCE:
        raise SystemExit(f"{path}: outputs changed by up to {worst:.3g} after the rewrite; file left as it was")
    path.write_bytes(after)
    done = [f"{removed} nodes removed"] if removed else []
    done += ["age output clipped"] if clipped else []
    return f"{path}: {', '.join(done)}, largest output change on {faces} real faces {worst:.2g}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.optimize", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="ONNX files written by export/, rewritten in place")
    parser.add_argument("--check-faces", type=int, default=64, help="real faces to compare outputs on (0: skip)")
    args = parser.parse_args(argv)
    for path in args.models:
        if not path.is_file():
            print(f"error: no such model file: {path}", file=sys.stderr)
            return 2
    for path in args.models:
        print(optimize_file(path, args.check_faces))
    return 0


if __name__ == "__main__":
    sys.exit(main())
