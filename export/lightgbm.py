"""Fuse an ONNX backbone and LightGBM heads into one age/gender model.

    python -m export.lightgbm --backbone models/faceres.onnx --heads DIR --out models/agegender.onnx

The fused graph takes the face crop (the backbone's input: size, layout and
normalisation as its metadata says) and gives `p_male` (N, 1) and `age` (N, 1, years),
plus `embedding` (N, D). Inside:

    image -> [flip: image and its mirror stacked on the batch axis]
          -> backbone -> embedding, pretrained P(male), pretrained age softmax
          -> feature row as training.backbones builds it (embedding, gender_logit,
             age_mean; flip: mean over image and mirror)
          -> two LightGBM tree ensembles (onnxmltools, raw scores)
          -> residual mode: p_male = sigmoid(gender_logit + raw), age = age_mean + raw
             direct mode:   p_male = sigmoid(raw),                age = raw
          -> age clipped to realtime.metadata.AGE_RANGE (0-100 years), as the heads clip

onnxmltools converts a binary booster to a classifier whose probability cannot take
the init score, so the gender booster is converted as a regressor (its raw score)
and the sigmoid is applied here; the model text is rewritten only in its objective
line, and the raw scores are checked to be identical before conversion.

onnxmltools emits IR 4 and ai.onnx.ml opset 1; the heads graph is raised to the
backbone's IR version and opsets before `onnx.compose.merge_models` joins them.

Before writing, the export checks that the backbone reproduces the cached features
the heads were fitted on (same network, same crops), and checks parity of the fused
model against LightGBM's own predictions on real faces' features (max |d age|,
max |d p_male|). Metadata: `realtime.metadata.ModelMetadata` with validation metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from export.metadata import read_metadata, write_metadata
from export.optimize import AGE_CLIP_NOTE, clip_age
from realtime.metadata import ModelMetadata
from realtime.paths import BACKBONE_MODEL, git_commit
from training.heads import FeatureSpec, HeadsRecord
from training.labels import DEFAULT_LABELS

INPUT = "image"
OUTPUT_P_MALE = "p_male"
OUTPUT_AGE = "age"
OUTPUT_EMBEDDING = "embedding"
PREFIX = "backbone/"


# ------------------------------------------------------------------ trees to ONNX


def raw_score_booster(booster):
    """A copy of a booster whose `predict` returns the raw score (a regressor's view).

    Only the objective is rewritten (in the header and the parameters section); the
    trees are untouched, and the caller checks that predictions agree.
    """
    import lightgbm as lgb

    lines = booster.model_to_string().splitlines()
    out = []
    for line in lines:
        if line.startswith("objective="):
            line = "objective=regression"
        elif line.startswith("[objective: "):
            line = "[objective: regression]"
        out.append(line)
    return lgb.Booster(model_str="\n".join(out) + "\n")


def trees_to_onnx(booster, n_features: int, check: np.ndarray | None = None) -> onnx.ModelProto:
    """The booster's raw score as an ONNX graph: input `X` (N, F) -> `variable` (N, 1)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    raw = raw_score_booster(booster)
    if check is not None:
        diff = np.abs(raw.predict(check) - booster.predict(check, raw_score=True)).max()
        if diff > 1e-9:
            raise RuntimeError(f"raw-score copy of the booster disagrees with it ({diff})")
    model = onnxmltools.convert_lightgbm(raw, initial_types=[("X", FloatTensorType([None, n_features]))], zipmap=False)
    return model


def opset_of(model: onnx.ModelProto, domain: str) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ((domain,) if domain else ("", "ai.onnx")):
            return entry.version
    return None


def align(model: onnx.ModelProto, ir_version: int, opsets: dict[str, int]) -> onnx.ModelProto:
    """Set IR version and opset imports (ops used here exist unchanged in both)."""
    model.ir_version = ir_version
    del model.opset_import[:]
    for domain, version in opsets.items():
        model.opset_import.append(helper.make_opsetid(domain, version))
    return model


# ---------------------------------------------------------------- graph building


def const(name: str, value: Any, dtype=np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def pre_model(backbone_input: str, flip: bool, ir_version: int, opsets: dict[str, int], shape: list) -> onnx.ModelProto:
    """image -> backbone input; with flip, the mirrored images follow on the batch axis."""
    w_axis = 2 if len(shape) == 4 and shape[-1] == 3 else 3  # NHWC: W is axis 2; NCHW: 3
    nodes, inits = [], []
    if flip:
        inits += [const("flip/starts", [-1], np.int64), const("flip/ends", [-(2**63)], np.int64),
                  const("flip/axes", [w_axis], np.int64), const("flip/steps", [-1], np.int64)]
        nodes += [
            helper.make_node("Slice", [INPUT, "flip/starts", "flip/ends", "flip/axes", "flip/steps"], ["flip/mirror"], name="flip/mirror"),
            helper.make_node("Concat", [INPUT, "flip/mirror"], ["pre/out"], axis=0, name="flip/stack"),
        ]
    else:
        nodes.append(helper.make_node("Identity", [INPUT], ["pre/out"], name="pre/identity"))
    dims = ["batch", *shape[1:]]
    graph = helper.make_graph(
        nodes, "pre", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("pre/out", TensorProto.FLOAT, ["batch2", *shape[1:]])], inits,
    )
    return align(helper.make_model(graph), ir_version, opsets)


Graph = tuple[list[onnx.NodeProto], list[TensorProto]]  # nodes and initializers of a part


def pretrained_feature_nodes(n_age_classes: int, opset: int) -> Graph:
    """h/p, h/probs -> h/gender_logit, h/age_mean, as training.backbones computes them."""
    from training.backbones import P_CLIP

    inits = [
        const("h/p_lo", P_CLIP), const("h/p_hi", 1 - P_CLIP), const("h/one", 1.0),
        const("h/ages", np.arange(n_age_classes, dtype=np.float32).reshape(-1, 1)),
        const("h/sum_axes", [1], np.int64),
    ]
    nodes = [
        helper.make_node("Clip", ["h/p", "h/p_lo", "h/p_hi"], ["h/pc"]),
        helper.make_node("Sub", ["h/one", "h/pc"], ["h/q"]),
        helper.make_node("Div", ["h/pc", "h/q"], ["h/odds"]),
        helper.make_node("Log", ["h/odds"], ["h/gender_logit"]),
        helper.make_node("MatMul", ["h/probs", "h/ages"], ["h/age_num"]),
        reduce_node("ReduceSum", "h/probs", "h/age_den", [1], True, opset, inits),
        helper.make_node("Div", ["h/age_num", "h/age_den"], ["h/age_mean"]),
        helper.make_node("Concat", ["h/emb", "h/gender_logit", "h/age_mean"], ["h/rows"], axis=1),
    ]
    return nodes, inits


def feature_nodes(spec: FeatureSpec, dim: int, embedding_dim: int, n_age_classes: int, opset: int) -> Graph:
    """Backbone outputs -> h/features (the rows the heads were fitted on) and the embedding output."""
    if spec.head_features:
        nodes, inits = pretrained_feature_nodes(n_age_classes, opset)
    else:
        nodes, inits = [helper.make_node("Identity", ["h/emb"], ["h/rows"])], []
    if spec.flip:  # the image and its mirror arrive stacked on the batch axis (pre_model)
        inits.append(const("h/pair_shape", [2, -1, dim], np.int64))
        nodes += [
            helper.make_node("Reshape", ["h/rows", "h/pair_shape"], ["h/pairs"]),
            reduce_node("ReduceMean", "h/pairs", "h/features", [0], False, opset, inits),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["h/rows"], ["h/features"]))
    # the embedding output: the first embedding_dim feature columns (flip-averaged too)
    inits += [const("h/emb_start", [0], np.int64), const("h/emb_end", [embedding_dim], np.int64), const("h/axis1", [1], np.int64)]
    nodes.append(helper.make_node("Slice", ["h/features", "h/emb_start", "h/emb_end", "h/axis1"], [OUTPUT_EMBEDDING]))
    return nodes, inits


def tree_nodes(heads, dim: int, check: np.ndarray | None) -> tuple[Graph, dict[str, str]]:
    """h/features -> each booster's raw score; and the name of each task's score."""
    nodes, inits, raws = [], [], {}
    for task in ("gender", "age"):
        trees = trees_to_onnx(getattr(heads, task), dim, check)
        trees = compose.add_prefix(trees, f"{task}/")
        nodes.append(helper.make_node("Identity", ["h/features"], [trees.graph.input[0].name], name=f"{task}/in"))
        nodes.extend(trees.graph.node)
        inits.extend(trees.graph.initializer)
        raws[task] = trees.graph.output[0].name
    return (nodes, inits), raws


def output_nodes(record: HeadsRecord, raws: dict[str, str]) -> Graph:
    """Raw scores -> p_male and age, starting from the pretrained prediction in residual mode."""
    nodes, inits = [], []
    if record.mode == "residual":
        for task in ("gender", "age"):
            col = record.init_columns[task]
            inits += [const(f"{task}/init_start", [col], np.int64), const(f"{task}/init_end", [col + 1], np.int64)]
            nodes.append(helper.make_node("Slice", ["h/features", f"{task}/init_start", f"{task}/init_end", "h/axis1"], [f"{task}/init"]))
        nodes += [
            helper.make_node("Add", [raws["gender"], "gender/init"], ["gender/logit"]),
            helper.make_node("Add", [raws["age"], "age/init"], [OUTPUT_AGE]),
        ]
    else:
        nodes += [
            helper.make_node("Identity", [raws["gender"]], ["gender/logit"]),
            helper.make_node("Identity", [raws["age"]], [OUTPUT_AGE]),
        ]
    nodes.append(helper.make_node("Sigmoid", ["gender/logit"], [OUTPUT_P_MALE]))
    return nodes, inits


def heads_model(
    heads, embedding_dim: int, n_age_classes: int, ir_version: int, opsets: dict[str, int], check: np.ndarray | None
) -> onnx.ModelProto:
    """(embedding, pretrained p, pretrained age probs) -> p_male, age, embedding."""
    record: HeadsRecord = heads.record
    spec, dim = record.feature_spec, record.feature_dim
    if dim != embedding_dim + (2 if spec.head_features else 0):
        raise ValueError(f"heads expect {dim} features; the backbone gives {embedding_dim} (+2 with head features)")
    inputs = [helper.make_tensor_value_info("h/emb", TensorProto.FLOAT, ["b", embedding_dim])]
    if spec.head_features:
        inputs += [
            helper.make_tensor_value_info("h/p", TensorProto.FLOAT, ["b", 1]),
            helper.make_tensor_value_info("h/probs", TensorProto.FLOAT, ["b", n_age_classes]),
        ]
    nodes, inits = feature_nodes(spec, dim, embedding_dim, n_age_classes, opsets[""])
    (more_nodes, more_inits), raws = tree_nodes(heads, dim, check)
    last_nodes, last_inits = output_nodes(record, raws)
    outputs = [
        helper.make_tensor_value_info(OUTPUT_AGE, TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info(OUTPUT_P_MALE, TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info(OUTPUT_EMBEDDING, TensorProto.FLOAT, ["N", embedding_dim]),
    ]
    graph = helper.make_graph(nodes + more_nodes + last_nodes, "lightgbm_heads", inputs, outputs, inits + more_inits + last_inits)
    return align(helper.make_model(graph), ir_version, opsets)


def reduce_node(op: str, x: str, y: str, axes: list[int], keepdims: bool, opset: int, inits: list) -> onnx.NodeProto:
    """ReduceSum takes axes as an input from opset 13, ReduceMean from 18."""
    takes_input = opset >= (13 if op == "ReduceSum" else 18)
    if takes_input:
        name = f"{y}/axes"
        inits.append(const(name, axes, np.int64))
        return helper.make_node(op, [x, name], [y], keepdims=int(keepdims))
    return helper.make_node(op, [x], [y], axes=axes, keepdims=int(keepdims))


def fuse(backbone: onnx.ModelProto, heads, check: np.ndarray | None = None) -> onnx.ModelProto:
    """The fused model (without metadata)."""
    meta = ModelMetadata.from_props({p.key: p.value for p in backbone.metadata_props})
    spec: FeatureSpec = heads.record.feature_spec
    backbone = onnx.ModelProto.FromString(backbone.SerializeToString())
    del backbone.metadata_props[:]
    opsets = {e.domain or "": e.version for e in backbone.opset_import}
    opsets[""] = opsets.pop("ai.onnx", opsets.get("", 17))
    opsets["ai.onnx.ml"] = max(opsets.get("ai.onnx.ml", 1), 1)
    backbone = align(backbone, backbone.ir_version, opsets)
    backbone = compose.add_prefix(backbone, PREFIX)

    outputs = {o.name: o for o in backbone.graph.output}
    shape_of = {
        o.name: [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim] for o in backbone.graph.output
    }
    emb_name = PREFIX + meta.embedding_output
    emb_dim = shape_of[emb_name][-1]
    age_name = PREFIX + meta.age_output
    n_age = shape_of[age_name][-1] if age_name in shape_of else 100
    for name in (emb_name, *( [PREFIX + meta.gender_output, age_name] if spec.head_features else [])):
        if name not in outputs:
            raise ValueError(f"backbone has no output {name[len(PREFIX):]!r}")

    post = heads_model(heads, emb_dim, n_age, backbone.ir_version, opsets, check)
    io_map = [(emb_name, "h/emb")]
    if spec.head_features:
        io_map += [(PREFIX + meta.gender_output, "h/p"), (age_name, "h/probs")]
    body = compose.merge_models(backbone, post, io_map=io_map, outputs=[OUTPUT_AGE, OUTPUT_P_MALE, OUTPUT_EMBEDDING])

    backbone_input = body.graph.input[0]
    in_shape = [d.dim_value if d.HasField("dim_value") else None for d in backbone_input.type.tensor_type.shape.dim]
    pre = pre_model(backbone_input.name, spec.flip, backbone.ir_version, opsets, in_shape)
    fused = compose.merge_models(pre, body, io_map=[("pre/out", backbone_input.name)])
    fused.graph.name = "agegender"
    # merge_models concatenates the parts' opset imports; keep one entry per domain
    del fused.opset_import[:]
    for domain, version in opsets.items():
        fused.opset_import.append(helper.make_opsetid(domain, version))
    clip_age(fused, OUTPUT_AGE)  # as training.heads clips: trees extrapolate below 0 years
    onnx.checker.check_model(fused, full_check=True)
    return fused


# ----------------------------------------------------------------- checks & metrics


def make_crops(labels_path: Path, files: list[str], size: int, margin: float) -> np.ndarray:
    import cv2

    from realtime.detection import DetectorOptions, FaceDetector
    from training.facecrops import crop_for_model

    root = Path(labels_path).parent
    crops = []
    with FaceDetector.create_from_options(DetectorOptions()) as detector:
        for f in files:
            image = cv2.imread(str(root / f), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(root / f)
            crops.append(crop_for_model(image, detector, size, margin).crop)
    return np.stack(crops)


def fresh_features(backbone, crops: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The feature rows training.backbones computes for `crops`, laid out as `spec` says."""
    from training.backbones import embed_features

    return embed_features(backbone, crops, spec.head_features, spec.flip)


def check_features(backbone_path: Path, heads, labels_path: Path, features_path: Path, n: int = 24) -> dict[str, Any]:
    """The backbone, fed the shared crops, must reproduce the cached features the heads saw."""
    from training.backbones import load_backbone
    from training.bottlenecks import load_features

    files, X, _ = load_features(features_path, heads.record.features_key)
    with np.load(features_path, allow_pickle=False) as data:
        # a joined file (training.featuresets) also holds degraded copies: only clean rows can be reproduced
        clean = data["part"] == 0 if "part" in data.files else np.ones(len(files), bool)
    rng = np.random.default_rng(1)
    rows = np.flatnonzero(clean)
    idx = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
    backbone = load_backbone(backbone_path)
    crops = make_crops(labels_path, files[idx].tolist(), backbone.input_size, backbone.crop_margin)
    fresh = fresh_features(backbone, crops, heads.record.feature_spec)
    diff = np.abs(fresh - X[idx])
    scale = float(np.abs(X[idx]).max())
    report = {"faces": int(len(idx)), "max_abs_diff": float(diff.max()), "feature_scale": scale}
    p0, a0 = heads.predict(X[idx])
    p1, a1 = heads.predict(fresh)
    report["max_d_age_from_features"] = float(np.abs(a1 - a0).max())
    report["max_d_p_from_features"] = float(np.abs(p1 - p0).max())
    return report


def parity(fused: onnx.ModelProto | bytes | str, backbone_path: Path, heads, crops: np.ndarray, threads: int = 0) -> dict[str, Any]:
    """Fused ONNX vs LightGBM on the features the numpy pipeline computes for the same crops."""
    from export.parity import ort_runner
    from training.backbones import load_backbone

    backbone = load_backbone(backbone_path, threads)
    p_ref, age_ref = heads.predict(fresh_features(backbone, crops, heads.record.feature_spec))
    source = fused.SerializeToString() if isinstance(fused, onnx.ModelProto) else fused
    outputs = ort_runner(source, threads)(backbone.preprocess(crops))
    age, p_male = outputs[OUTPUT_AGE].reshape(-1), outputs[OUTPUT_P_MALE].reshape(-1)
    return {
        "faces": int(len(crops)),
        "max_abs_d_age": float(np.abs(age - age_ref).max()),
        "max_abs_d_p_male": float(np.abs(p_male - p_ref).max()),
        "gender_decisions_differ": int(((p_male >= 0.5) != (p_ref >= 0.5)).sum()),
        "input_layout": backbone.metadata.layout,
    }


def validation_metrics(heads_dir: Path, heads, labels_path: Path) -> dict[str, Any]:
    """Per-source validation metrics (from the cached features) plus the CV scores."""
    from training.heads import score

    record: HeadsRecord = heads.record
    features = Path(record.features_file)
    metrics: dict[str, Any] = {}
    if record.split.used and features.is_file():
        result = score(heads_dir, features, labels_path, "val")
        metrics["validation"] = result["metrics"]
        metrics["validation_split"] = {"seed": record.split.seed, "val_fraction": record.split.val_fraction}
    metrics["cv"] = record.cv
    return metrics


def training_data_note(record: HeadsRecord) -> str:
    split = record.split
    rows = (
        f"shared/data/faces labels.csv, train split of training.splits (seed {split.seed}, validation fraction {split.val_fraction}) "
        if split.used else "shared/data/faces labels.csv, all rows "
    )
    return rows + (
        f"({', '.join(f'{k} {v}' for k, v in record.fit_rows_by_source.items())} faces; ages from the sources' labels, "
        "wiki ages noisy; crops by the live detector and training.facecrops)"
    )


def fused_metadata(backbone_meta: ModelMetadata, heads, metrics: dict, command: str, backbone_path: Path, backbone_sha: str) -> ModelMetadata:
    record: HeadsRecord = heads.record
    flip = " with horizontal-flip averaging" if record.feature_spec.flip else ""
    # faceres-deep: agegender-faceres-lightgbm as before; a resized or quantized backbone
    # (export.quantize: faceres-deep-192-int8) and a single view say so in the name
    family, *rest = backbone_meta.name.split("-")
    extras = [t for t in rest if t != "deep"] + ([] if record.feature_spec.flip else ["noflip"])
    return ModelMetadata(
        name="-".join(["agegender", family, "lightgbm", *extras]),
        version=f"{time.strftime('%Y%m%d')}-{git_commit() or 'nogit'}",
        input_name=INPUT,
        input_size=backbone_meta.input_size,
        layout=backbone_meta.layout,
        channel_order=backbone_meta.channel_order,
        mean=backbone_meta.mean,
        scale=backbone_meta.scale,
        gender_output=OUTPUT_P_MALE,
        age_output=OUTPUT_AGE,
        age_kind="regression",
        crop_margin=backbone_meta.crop_margin,
        embedding_output=OUTPUT_EMBEDDING,
        license=(
            f"backbone: {backbone_meta.license or 'see the backbone model'}; heads trained on UTKFace "
            "(non-commercial research use only) and IMDB-WIKI wiki_crop portraits: research use"
        ),
        provenance=(
            f"backbone {backbone_meta.name} {backbone_meta.version} ({backbone_path.name}, sha256 {backbone_sha[:16]}); "
            f"{backbone_meta.provenance + '; ' if backbone_meta.provenance else ''}"
            f"heads: LightGBM {record.lightgbm_version} gender classifier + age regressor, {record.mode} mode, "
            f"on {record.feature_spec.description}{flip}, {record.tuning()}, "
            f"fitted by `{record.command}` at git {record.git_commit}; "
            f"fused by `{command}` at git {git_commit()}; {AGE_CLIP_NOTE}"
        ),
        training_data=training_data_note(record),
        metrics=metrics,
    )


# ----------------------------------------------------------------------------- export


@dataclass(frozen=True)
class LightgbmExportOptions:
    heads: Path  # folder written by `python -m training.heads fit`
    out: Path  # the fused ONNX file; the fp16 copy goes beside it
    backbone: Path = BACKBONE_MODEL  # ONNX backbone with metadata
    labels: Path = DEFAULT_LABELS
    parity_faces: int = 64  # real faces for the parity check
    check_faces: int = 24  # faces to re-extract to verify the backbone (0: skip)
    tol_age: float = 0.05  # largest |d age| in years the parity check accepts
    tol_p: float = 1e-3  # largest |d p_male| the parity check accepts
    fp16: bool = False  # also write <out>-fp16.onnx with a float16 backbone
    seed: int = 0
    command: str = ""  # the command line, recorded in the metadata


def verify_backbone(options: LightgbmExportOptions, heads, backbone_sha: str) -> dict[str, Any] | None:
    """Refuse a backbone that does not give the features the heads were fitted on."""
    record: HeadsRecord = heads.record
    recorded_sha = record.feature_spec.backbone_sha256
    if recorded_sha and recorded_sha != backbone_sha:
        print(f"[check] note: {options.backbone} is not the file the features came from ({record.feature_spec.backbone}); comparing features")
    features_path = Path(record.features_file)
    if features_path.is_file() and options.check_faces:
        check = check_features(options.backbone, heads, options.labels, features_path, options.check_faces)
        print(f"[check] backbone reproduces cached features: {check}")
        if check["max_abs_diff"] > 1e-3 * max(check["feature_scale"], 1.0):
            raise SystemExit(
                f"{options.backbone} does not reproduce the features the heads were fitted on "
                f"(max |diff| {check['max_abs_diff']:.4g}); export with the backbone named in the heads' feature_spec"
            )
        return check
    if recorded_sha and recorded_sha != backbone_sha:
        raise SystemExit("cannot verify the backbone: its sha256 differs from the features' and the features file is gone")
    return None


def feature_sample(heads) -> np.ndarray | None:
    """Cached feature rows to check the trees' conversion on, where the file is still there."""
    from training.bottlenecks import load_features

    path = Path(heads.record.features_file)
    return load_features(path, heads.record.features_key)[1][:256] if path.is_file() else None


def parity_crops(options: LightgbmExportOptions, heads, backbone_meta: ModelMetadata) -> np.ndarray:
    """Crops of real faces for the parity check, from the validation split where there is one."""
    from training.labels import load_labels
    from training.splits import split_for_files

    labels = load_labels(options.labels)
    split = heads.record.split
    pool = labels.file
    if split.used:
        pool = labels.file[split_for_files(labels.file, labels, split.seed, split.val_fraction)]
    rng = np.random.default_rng(options.seed)
    files = pool[np.sort(rng.choice(len(pool), size=min(options.parity_faces, len(pool)), replace=False))].tolist()
    return make_crops(options.labels, files, backbone_meta.input_size, backbone_meta.crop_margin)


def check_parity(options: LightgbmExportOptions, fused: onnx.ModelProto, heads, crops: np.ndarray) -> dict[str, Any]:
    result = parity(fused, options.backbone, heads, crops)
    print(f"[parity] fused ONNX vs LightGBM on {len(crops)} real faces: {result}")
    if result["max_abs_d_age"] > options.tol_age or result["max_abs_d_p_male"] > options.tol_p:
        raise SystemExit(f"parity check failed: {result}")
    return result


def save(model: onnx.ModelProto, meta: ModelMetadata, path: Path) -> dict[str, Any]:
    write_metadata(model, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    print(f"[write] {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return {"out": str(path), "bytes": path.stat().st_size}


def save_fp16(options: LightgbmExportOptions, backbone: onnx.ModelProto, heads, sample, crops: np.ndarray, meta: ModelMetadata) -> dict[str, Any]:
    """The fused model with a float16 backbone (the heads stay float32), beside the other."""
    from export.tfjs import to_fp16

    half = fuse(to_fp16(backbone), heads, sample)
    half_parity = parity(half, options.backbone, heads, crops)
    print(f"[fp16] fused (fp16 backbone, fp32 heads) vs LightGBM on fp32 features: {half_parity}")
    half_meta = dataclasses.replace(
        meta,
        name=f"{meta.name}-fp16",
        provenance=meta.provenance + "; backbone weights and compute converted to float16 (onnxconverter-common), heads float32",
        metrics={**meta.metrics, "parity_vs_lightgbm": half_parity},
    )
    return {**save(half, half_meta, options.out.with_name(f"{options.out.stem}-fp16{options.out.suffix}")), "parity": half_parity}


def export(options: LightgbmExportOptions) -> dict[str, Any]:
    """Fuse, check and write the model; the report of what was checked and written."""
    from training.backbones import file_sha256
    from training.calibrate import load_calibration
    from training.heads import Heads

    started = time.perf_counter()
    heads = Heads.load(options.heads)
    backbone_meta = read_metadata(options.backbone)
    backbone_sha = file_sha256(options.backbone)
    report: dict[str, Any] = {}
    check = verify_backbone(options, heads, backbone_sha)
    if check is not None:
        report["feature_check"] = check
    backbone = onnx.load(str(options.backbone))
    sample = feature_sample(heads)
    fused = fuse(backbone, heads, sample)
    crops = parity_crops(options, heads, backbone_meta)
    report["parity"] = check_parity(options, fused, heads, crops)

    metrics = {**validation_metrics(options.heads, heads, options.labels), "parity_vs_lightgbm": report["parity"]}
    meta = fused_metadata(backbone_meta, heads, metrics, options.command, options.backbone, backbone_sha)
    calibration = load_calibration(options.heads)
    if calibration is not None:  # applied when the outputs are decoded (realtime.model), not in the graph
        meta = dataclasses.replace(meta, gender_calibration=calibration.to_dict())
        print(f"[calibration] gender calibration from {options.heads}/calibration.json")
    report.update(save(fused, meta, options.out))
    if "validation" in metrics:
        print(f"[metrics] validation: {json.dumps(metrics['validation'])}")
    if options.fp16:
        report["fp16"] = save_fp16(options, backbone, heads, sample, crops, meta)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    defaults = LightgbmExportOptions
    parser = argparse.ArgumentParser(prog="python -m export.lightgbm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", type=Path, default=defaults.backbone, help="ONNX backbone with metadata (default: models/faceres.onnx)")
    parser.add_argument("--heads", type=Path, required=True, help="folder written by `python -m training.heads fit`")
    parser.add_argument("--out", type=Path, required=True, help="fused ONNX file to write, e.g. models/agegender.onnx")
    parser.add_argument("--labels", type=Path, default=defaults.labels)
    parser.add_argument("--parity-faces", type=int, default=defaults.parity_faces, help="real faces for the parity check")
    parser.add_argument("--check-faces", type=int, default=defaults.check_faces, help="faces to re-extract to verify the backbone (0: skip)")
    parser.add_argument("--tol-age", type=float, default=defaults.tol_age, help="largest |d age| in years accepted by the parity check")
    parser.add_argument("--tol-p", type=float, default=defaults.tol_p, help="largest |d p_male| accepted by the parity check")
    parser.add_argument("--fp16", action="store_true", help="also write <out>-fp16.onnx with a float16 backbone")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    command = "python -m export.lightgbm " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    options = LightgbmExportOptions(
        heads=args.heads, out=args.out, backbone=args.backbone, labels=args.labels, parity_faces=args.parity_faces,
        check_faces=args.check_faces, tol_age=args.tol_age, tol_p=args.tol_p, fp16=args.fp16, seed=args.seed, command=command,
    )
    print(json.dumps(export(options), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
