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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from export.metadata import read_metadata, write_metadata
from export.optimize import clip_age
from realtime.metadata import ModelMetadata

REPO_ROOT = Path(__file__).resolve().parent.parent
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


def heads_model(
    heads, embedding_dim: int, n_age_classes: int, spec: dict, ir_version: int, opsets: dict[str, int], check: np.ndarray | None
) -> onnx.ModelProto:
    """(embedding, pretrained p, pretrained age probs) -> p_male, age, embedding."""
    head_features = bool(spec.get("head_features"))
    flip = bool(spec.get("flip"))
    dim = heads.info["feature_dim"]
    if dim != embedding_dim + (2 if head_features else 0):
        raise ValueError(f"heads expect {dim} features; the backbone gives {embedding_dim} (+2 with head features)")
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("h/emb", TensorProto.FLOAT, ["b", embedding_dim])]
    if head_features:
        inputs += [
            helper.make_tensor_value_info("h/p", TensorProto.FLOAT, ["b", 1]),
            helper.make_tensor_value_info("h/probs", TensorProto.FLOAT, ["b", n_age_classes]),
        ]
        from training.backbones import P_CLIP

        inits += [
            const("h/p_lo", P_CLIP), const("h/p_hi", 1 - P_CLIP), const("h/one", 1.0),
            const("h/ages", np.arange(n_age_classes, dtype=np.float32).reshape(-1, 1)),
            const("h/sum_axes", [1], np.int64),
        ]
        nodes += [
            helper.make_node("Clip", ["h/p", "h/p_lo", "h/p_hi"], ["h/pc"]),
            helper.make_node("Sub", ["h/one", "h/pc"], ["h/q"]),
            helper.make_node("Div", ["h/pc", "h/q"], ["h/odds"]),
            helper.make_node("Log", ["h/odds"], ["h/gender_logit"]),
            helper.make_node("MatMul", ["h/probs", "h/ages"], ["h/age_num"]),
            reduce_node("ReduceSum", "h/probs", "h/age_den", [1], True, opsets[""], inits),
            helper.make_node("Div", ["h/age_num", "h/age_den"], ["h/age_mean"]),
            helper.make_node("Concat", ["h/emb", "h/gender_logit", "h/age_mean"], ["h/rows"], axis=1),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["h/emb"], ["h/rows"]))
    if flip:
        inits.append(const("h/pair_shape", [2, -1, dim], np.int64))
        nodes += [
            helper.make_node("Reshape", ["h/rows", "h/pair_shape"], ["h/pairs"]),
            reduce_node("ReduceMean", "h/pairs", "h/features", [0], False, opsets[""], inits),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["h/rows"], ["h/features"]))
    # the embedding output: the first embedding_dim feature columns (flip-averaged too)
    inits += [const("h/emb_start", [0], np.int64), const("h/emb_end", [embedding_dim], np.int64), const("h/axis1", [1], np.int64)]
    nodes.append(helper.make_node("Slice", ["h/features", "h/emb_start", "h/emb_end", "h/axis1"], [OUTPUT_EMBEDDING]))

    raws = {}
    for task in ("gender", "age"):
        trees = trees_to_onnx(getattr(heads, task), dim, check)
        trees = compose.add_prefix(trees, f"{task}/")
        nodes.append(helper.make_node("Identity", ["h/features"], [trees.graph.input[0].name], name=f"{task}/in"))
        nodes.extend(trees.graph.node)
        inits.extend(trees.graph.initializer)
        raws[task] = trees.graph.output[0].name

    init_columns = heads.info.get("init_columns") or {}
    if heads.info["mode"] == "residual":
        for task, feature in (("gender", "gender_logit"), ("age", "age_mean")):
            col = init_columns[task]
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
    outputs = [
        helper.make_tensor_value_info(OUTPUT_AGE, TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info(OUTPUT_P_MALE, TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info(OUTPUT_EMBEDDING, TensorProto.FLOAT, ["N", embedding_dim]),
    ]
    graph = helper.make_graph(nodes, "lightgbm_heads", inputs, outputs, inits)
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
    spec = heads.info.get("feature_spec", {})
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
    for name in (emb_name, *( [PREFIX + meta.gender_output, age_name] if spec.get("head_features") else [])):
        if name not in outputs:
            raise ValueError(f"backbone has no output {name[len(PREFIX):]!r}")

    post = heads_model(heads, emb_dim, n_age, spec, backbone.ir_version, opsets, check)
    io_map = [(emb_name, "h/emb")]
    if spec.get("head_features"):
        io_map += [(PREFIX + meta.gender_output, "h/p"), (age_name, "h/probs")]
    body = compose.merge_models(backbone, post, io_map=io_map, outputs=[OUTPUT_AGE, OUTPUT_P_MALE, OUTPUT_EMBEDDING])

    backbone_input = body.graph.input[0]
    in_shape = [d.dim_value if d.HasField("dim_value") else None for d in backbone_input.type.tensor_type.shape.dim]
    pre = pre_model(backbone_input.name, bool(spec.get("flip")), backbone.ir_version, opsets, in_shape)
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


def check_features(backbone_path: Path, heads, labels_path: Path, features_path: Path, n: int = 24) -> dict[str, Any]:
    """The backbone, fed the shared crops, must reproduce the cached features the heads saw."""
    from training.backbones import embed_features, load_backbone
    from training.bottlenecks import load_features

    spec = heads.info.get("feature_spec", {})
    files, X, _ = load_features(features_path, heads.info.get("features_key", "features"))
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(len(files), size=min(n, len(files)), replace=False))
    backbone = load_backbone(backbone_path)
    crops = make_crops(labels_path, files[idx].tolist(), backbone.input_size, backbone.crop_margin)
    fresh = embed_features(backbone, crops, bool(spec.get("head_features")), bool(spec.get("flip")))
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
    import onnxruntime as ort

    from training.backbones import embed_features, load_backbone

    spec = heads.info.get("feature_spec", {})
    backbone = load_backbone(backbone_path, threads)
    features = embed_features(backbone, crops, bool(spec.get("head_features")), bool(spec.get("flip")))
    p_ref, age_ref = heads.predict(features)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = fused.SerializeToString() if isinstance(fused, onnx.ModelProto) else (fused if isinstance(fused, bytes) else str(fused))
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    meta = backbone.metadata
    age, p_male = session.run([OUTPUT_AGE, OUTPUT_P_MALE], {INPUT: backbone.preprocess(crops)})
    return {
        "faces": int(len(crops)),
        "max_abs_d_age": float(np.abs(age.reshape(-1) - age_ref).max()),
        "max_abs_d_p_male": float(np.abs(p_male.reshape(-1) - p_ref).max()),
        "gender_decisions_differ": int(((p_male.reshape(-1) >= 0.5) != (p_ref >= 0.5)).sum()),
        "input_layout": meta.layout,
    }


def validation_metrics(heads_dir: Path, heads, labels_path: Path) -> dict[str, Any]:
    """Per-source validation metrics (from the cached features) plus the CV scores."""
    from training.heads import score

    features = Path(heads.info.get("features_file", ""))
    metrics: dict[str, Any] = {}
    if heads.info.get("split", {}).get("used") and features.is_file():
        result = score(heads_dir, features, labels_path, "val")
        metrics["validation"] = result["metrics"]
        metrics["validation_split"] = {k: heads.info["split"][k] for k in ("seed", "val_fraction")}
    metrics["cv"] = {
        task: {k: v for k, v in heads.info[task]["cv"].items() if k != "best_iterations"} for task in ("gender", "age")
    }
    return metrics


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=REPO_ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fused_metadata(backbone_meta: ModelMetadata, heads, metrics: dict, command: str, backbone_path: Path, backbone_sha: str) -> ModelMetadata:
    info = heads.info
    spec = info.get("feature_spec", {})
    by_source = info.get("fit_rows_by_source", {})
    flip = " with horizontal-flip averaging" if spec.get("flip") else ""
    return ModelMetadata(
        name=f"agegender-{backbone_meta.name.split('-')[0]}-lightgbm",  # faceres-deep: agegender-faceres-lightgbm as before
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
            f"heads: LightGBM {info.get('lightgbm_version')} gender classifier + age regressor, {info['mode']} mode, "
            f"on {spec.get('features', 'embedding')}{flip}, Optuna search + {info['config']['folds']}-fold CV, "
            f"fitted by `{info.get('command')}` at git {info.get('git_commit')}; "
            f"fused by `{command}` at git {git_commit()}"
        ),
        training_data=(
            "shared/data/faces labels.csv, train split of training.splits "
            f"(seed {info.get('split', {}).get('seed')}, validation fraction {info.get('split', {}).get('val_fraction')}) "
            if info.get("split", {}).get("used") else "shared/data/faces labels.csv, all rows "
        ) + f"({', '.join(f'{k} {v}' for k, v in by_source.items())} faces; ages from the sources' labels, wiki ages noisy; "
        "crops by the live detector and training.facecrops)",
        metrics=metrics,
    )


# ----------------------------------------------------------------------------- CLI


def export(args: argparse.Namespace) -> dict[str, Any]:
    from training.backbones import file_sha256
    from training.heads import Heads
    from training.labels import load_labels

    t0 = time.perf_counter()
    heads = Heads.load(args.heads)
    backbone_meta = read_metadata(args.backbone)
    backbone_sha = file_sha256(args.backbone)
    spec = heads.info.get("feature_spec", {})
    report: dict[str, Any] = {}
    if spec.get("backbone_sha256") and spec["backbone_sha256"] != backbone_sha:
        print(f"[check] note: {args.backbone} is not the file the features came from ({spec.get('backbone')}); comparing features")

    features_path = Path(heads.info.get("features_file", ""))
    if features_path.is_file() and args.check_faces:
        report["feature_check"] = check_features(args.backbone, heads, args.labels, features_path, args.check_faces)
        fc = report["feature_check"]
        print(f"[check] backbone reproduces cached features: {fc}")
        if fc["max_abs_diff"] > 1e-3 * max(fc["feature_scale"], 1.0):
            raise SystemExit(
                f"{args.backbone} does not reproduce the features the heads were fitted on "
                f"(max |diff| {fc['max_abs_diff']:.4g}); export with the backbone named in the heads' feature_spec"
            )
    elif spec.get("backbone_sha256") and spec["backbone_sha256"] != backbone_sha:
        raise SystemExit("cannot verify the backbone: its sha256 differs from the features' and the features file is gone")

    backbone = onnx.load(str(args.backbone))
    sample = None
    if features_path.is_file():
        from training.bottlenecks import load_features

        sample = load_features(features_path, heads.info.get("features_key", "features"))[1][:256]
    fused = fuse(backbone, heads, sample)

    labels = load_labels(args.labels)
    from training.splits import split_for_files

    split = heads.info.get("split", {})
    pool = labels.file
    if split.get("used"):
        val = split_for_files(labels.file, labels, split["seed"], split["val_fraction"])
        pool = labels.file[val]
    rng = np.random.default_rng(args.seed)
    files = pool[np.sort(rng.choice(len(pool), size=min(args.parity_faces, len(pool)), replace=False))].tolist()
    crops = make_crops(args.labels, files, backbone_meta.input_size, backbone_meta.crop_margin)
    report["parity"] = parity(fused, args.backbone, heads, crops)
    print(f"[parity] fused ONNX vs LightGBM on {len(files)} real faces: {report['parity']}")
    if report["parity"]["max_abs_d_age"] > args.tol_age or report["parity"]["max_abs_d_p_male"] > args.tol_p:
        raise SystemExit(f"parity check failed: {report['parity']}")

    metrics = validation_metrics(args.heads, heads, args.labels)
    metrics["parity_vs_lightgbm"] = report["parity"]
    command = "python -m export.lightgbm " + " ".join(shlex.quote(a) for a in args.argv)
    meta = fused_metadata(backbone_meta, heads, metrics, command, Path(args.backbone), backbone_sha)
    write_metadata(fused, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fused, str(args.out))
    report["out"] = str(args.out)
    report["bytes"] = args.out.stat().st_size
    print(f"[write] {args.out} ({report['bytes'] / 1e6:.1f} MB)")
    if "validation" in metrics:
        print(f"[metrics] validation: {json.dumps(metrics['validation'])}")

    if args.fp16:
        from export.tfjs import to_fp16

        half_backbone = to_fp16(backbone)
        half = fuse(half_backbone, heads, sample)
        half_parity = parity(half, args.backbone, heads, crops)
        print(f"[fp16] fused (fp16 backbone, fp32 heads) vs LightGBM on fp32 features: {half_parity}")
        half_meta = dataclasses.replace(
            meta,
            name=f"{meta.name}-fp16",
            provenance=meta.provenance + "; backbone weights and compute converted to float16 (onnxconverter-common), heads float32",
            metrics={**metrics, "parity_vs_lightgbm": half_parity},
        )
        write_metadata(half, half_meta)
        path = args.out.with_name(f"{args.out.stem}-fp16{args.out.suffix}")
        onnx.save(half, str(path))
        report["fp16"] = {"out": str(path), "bytes": path.stat().st_size, "parity": half_parity}
        print(f"[write] {path} ({path.stat().st_size / 1e6:.1f} MB)")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    from training.labels import DEFAULT_LABELS

    parser = argparse.ArgumentParser(prog="python -m export.lightgbm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", type=Path, default=REPO_ROOT / "models" / "faceres.onnx", help="ONNX backbone with metadata (default: models/faceres.onnx)")
    parser.add_argument("--heads", type=Path, required=True, help="folder written by `python -m training.heads fit`")
    parser.add_argument("--out", type=Path, required=True, help="fused ONNX file to write, e.g. models/agegender.onnx")
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--parity-faces", type=int, default=64, help="real faces for the parity check")
    parser.add_argument("--check-faces", type=int, default=24, help="faces to re-extract to verify the backbone (0: skip)")
    parser.add_argument("--tol-age", type=float, default=0.05, help="largest |d age| in years accepted by the parity check")
    parser.add_argument("--tol-p", type=float, default=1e-3, help="largest |d p_male| accepted by the parity check")
    parser.add_argument("--fp16", action="store_true", help="also write <out>-fp16.onnx with a float16 backbone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    report = export(args)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
