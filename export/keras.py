"""Keras models to ONNX (tf2onnx) with our metadata, and the Keras bottleneck backbones.

    python -m export.keras --arch inception_v3|vggface [--weights imagenet|FILE|none] \\
        --out cache/backbones/inception_v3.onnx [--parity-faces 16]

The backbone file has one output, `embedding` (N, D), a dynamic batch axis and the
metadata of `realtime.metadata` (input size, channel order, mean/scale, crop margin
0.2); it has no age/gender heads (`gender_output`/`age_output` are empty), so it is
used with `python -m training.bottlenecks --backbone FILE --no-head-features`, then
`training.heads fit --mode direct` and `export.lightgbm`, which fuses it with the heads.

Before writing, the ONNX graph is run on real faces from shared/data/faces (whole
image as the crop, export.faces) and compared with TensorFlow running the Keras model;
the export fails if the embeddings differ by more than --tol (relative to their scale).
`training.finetune` uses `keras_to_onnx` and `tf_runner` for its models too.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from export.metadata import write_metadata
from export.optimize import optimize
from realtime.metadata import ModelMetadata

OPSET = 17  # what the other exporters write; onnxruntime >= 1.14 runs it
EMBEDDING = "embedding"
INPUT = "image"
LICENSES = {
    "inception_v3": "network: Apache-2.0 (keras.applications); ImageNet weights: see the Keras applications "
    "documentation (ImageNet terms apply)",
    "vggface": "network layout: MIT (rcmalli/keras-vggface); VGGFace weights: Oxford VGG, non-commercial research use",
}


def keras_to_onnx(model, input_name: str, input_size: int, outputs: Callable | None = None) -> onnx.ModelProto:
    """Convert a Keras model with tf2onnx, NHWC float input with a dynamic batch axis.

    The model is wrapped in a tf.function returning a dict, so the ONNX outputs carry
    the dict's keys as names (tf2onnx keeps them); `outputs` maps the model's raw result
    to that dict (default: the model's single output as `embedding`).
    """
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name=input_name)

    @tf.function(input_signature=[spec])
    def serve(x):
        raw = model(x, training=False)
        named = outputs(raw) if outputs else {EMBEDDING: raw}
        return {name: tf.identity(value, name=name) for name, value in named.items()}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
    name_batch_axis(proto)
    optimize(proto)  # checks the model too
    return proto


def name_batch_axis(proto: onnx.ModelProto) -> None:
    """tf2onnx names the free batch axis 'unk__N'; call it 'batch' everywhere."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def tf_runner(model, outputs: Callable | None = None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """An export.parity runner for a Keras model (TensorFlow on the CPU or GPU)."""

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        raw = model(batch, training=False)
        named = outputs(raw) if outputs else {EMBEDDING: raw}
        return {k: np.asarray(v, np.float32) for k, v in named.items()}

    return run


@dataclass(frozen=True)
class EmbeddingParity:
    n: int
    max_abs: float
    scale: float  # largest |value| of the reference embedding
    cosine_min: float  # smallest cosine similarity between a face's two embeddings

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.scale, 1e-12)


def embedding_parity(reference, candidate, batches) -> EmbeddingParity:
    """Compare the `embedding` output of two runners on the same input batches."""
    refs, cands = [], []
    for batch in batches:
        refs.append(reference(batch)[EMBEDDING].reshape(len(batch), -1))
        cands.append(candidate(batch)[EMBEDDING].reshape(len(batch), -1))
    if not refs:
        raise ValueError("embedding_parity got no batches")
    a, b = np.concatenate(refs).astype(np.float64), np.concatenate(cands).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return EmbeddingParity(len(a), float(np.abs(a - b).max()), float(np.abs(a).max()), float(cos.min()))


def real_face_batches(meta: ModelMetadata, n: int, batch_size: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Preprocessed batches of n real faces (n/2 per source), whole image as the crop."""
    from export.faces import batches, load_labels, sample_faces

    faces = sample_faces(load_labels(), max(1, n // 2), seed)
    return list(batches(faces, meta, batch_size))


def backbone_metadata(arch: str, weights: str, command: str) -> ModelMetadata:
    from training.keras_backbones import SPECS

    spec = SPECS[arch]
    source = {"imagenet": "ImageNet weights from keras.applications", "none": "random weights (for tests only)"}.get(
        weights, f"weights file {Path(weights).name}"
    )
    return ModelMetadata(
        name=f"{arch}-backbone",
        version=time.strftime("%Y%m%d"),
        input_name=INPUT,
        **spec.input_fields(),
        # a backbone only: no heads, so these name nothing (training.backbones checks for them)
        gender_output="",
        age_output="",
        age_kind="regression",
        embedding_output=EMBEDDING,
        license=LICENSES[arch],
        provenance=f"{arch} built by training.keras_backbones, {source}; converted by `{command}` (tf2onnx, opset {OPSET})",
        training_data="ImageNet (inception_v3)" if arch == "inception_v3" and weights == "imagenet" else (
            "VGGFace (vggface weights file)" if arch == "vggface" and weights != "none" else "none (random weights)"
        ),
    )


def export_backbone(
    arch: str, weights: str, out: Path, parity_faces: int = 16, tol: float = 1e-4, seed: int = 0, command: str = "", model=None
) -> dict:
    """Build (unless `model` is given), convert, check parity on real faces, write `out`."""
    from export.parity import ort_runner
    from training.keras_backbones import SPECS, build_backbone

    t0 = time.perf_counter()
    model = model if model is not None else build_backbone(arch, None if weights == "none" else weights, seed)
    spec = SPECS[arch]
    proto = keras_to_onnx(model, INPUT, spec.input_size)
    meta = backbone_metadata(arch, weights, command or f"python -m export.keras --arch {arch} --weights {weights}")
    report: dict = {"arch": arch, "weights": weights, "embedding_dim": spec.embedding_dim}
    if parity_faces:
        data = real_face_batches(meta, parity_faces)
        parity = embedding_parity(tf_runner(model), ort_runner(proto.SerializeToString()), data)
        report["parity"] = {**asdict(parity), "relative": parity.relative}
        print(f"[parity] TF vs ONNX embeddings on {parity.n} real faces: {report['parity']}", flush=True)
        if parity.relative > tol:
            raise SystemExit(f"parity check failed: max |d embedding| {parity.max_abs:.3g} is {parity.relative:.2g} of the scale (> {tol})")
        meta = ModelMetadata(**{**asdict(meta), "metrics": {"parity_tf_vs_onnx": report["parity"]}})
    write_metadata(proto, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    report.update(out=str(out), bytes=out.stat().st_size, seconds=round(time.perf_counter() - t0, 1))
    return report


def main(argv: list[str] | None = None) -> int:
    from training.keras_backbones import ARCHES, limit_threads

    parser = argparse.ArgumentParser(prog="python -m export.keras", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHES, required=True)
    parser.add_argument("--weights", default="imagenet", help="imagenet (inception_v3 only; downloads), a weights file (.h5 / .weights.h5), or none (random, for tests)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write, e.g. cache/backbones/inception_v3.onnx")
    parser.add_argument("--parity-faces", type=int, default=16, help="real faces for the TF vs ONNX check (0: skip)")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest |d embedding| accepted, relative to the embedding's scale")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    args = parser.parse_args(argv)
    if args.arch == "vggface" and args.weights == "imagenet":
        parser.error("vggface has no ImageNet weights: pass --weights FILE.h5 (keras-vggface notop VGG16) or none")
    limit_threads(args.threads)
    command = "python -m export.keras " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = export_backbone(args.arch, args.weights, args.out, args.parity_faces, args.tol, args.seed, command)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
