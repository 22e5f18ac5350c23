"""Fine-tune the face backbone end to end with age and gender heads (prototype 2), export ONNX.

    python -m training.finetune --labels ../shared/data/faces/labels.csv --out DIR \\
        [--arch faceres|simple_cnn] [--epochs N] [--limit N] [--train-source SOURCE] [--separate-age-by-gender] [--split]

- `--arch faceres` (default): the Keras MobileNet of `training.keras_backbones` with the
  pretrained weights of models/faceres.onnx, its pretrained `feats` layer and heads
  included, so training starts from the shipped model's predictions.
  `--arch simple_cnn`: the prototype's small CNN from scratch (128 px), a baseline.
- Heads: gender = sigmoid P(male), binary cross-entropy. Age = softmax over 0..99 whose
  expected value is the estimate, trained on |E[age] - true age| (L1 on the expectation).
  Softmax rather than a regression output because faceres' pretrained age head is
  exactly that (so it is reused as the starting point, not thrown away), and because the
  runtime reports the distribution's spread (`age_std`) for softmax models.
- `--separate-age-by-gender`: two age softmaxes, one per gender (prototype 2); in
  training each face's loss goes through its true gender's head only; the exported
  `age_probs` is the mixture P(male) * male head + (1 - P(male)) * female head, whose
  expectation is the gender-probability-weighted mix of the two ages.
- Inputs: crops from the live detector and crop (`training.facecrops`, through
  `training.bottlenecks.CropReader`), at the network's size and crop margin, cached as a
  uint8 npz under --cache so epochs and reruns never re-run the detector. Augmentation:
  horizontal flips only (the detector's crops are already aligned by its keypoints).
  Batches are gathered from the one uint8 array (all 38,652 faces at 224 px are 5.8 GB).
- Adam at --lr, decayed to 0 over the run by a cosine (`--schedule cosine`, default) or
  held (`constant`). After every epoch the weights go to `DIR/checkpoint.weights.h5`
  (and the epochs behind them to `DIR/checkpoint.json`), written whole before they
  replace the last; `--init-weights FILE` starts from such a file (its epochs are
  carried into the report and the metadata), so a stopped run is exported with
  `--epochs 0` or continued with more (with a fresh optimizer and schedule).
- `--split`: train on the train split of `training.splits` and report validation
  metrics (training.metrics); without it every row trains and the metrics are on the
  training rows (labelled so).
- The result, `DIR/model.onnx` (tf2onnx, opset 17, dynamic batch), carries the
  metadata of `realtime.metadata` (age_kind softmax, outputs `p_male`, `age_probs`,
  `embedding`), so `run_camera.py --model DIR/model.onnx` runs it, and so
  `training.bottlenecks --backbone DIR/model.onnx` takes features from it for the
  LightGBM heads; before writing, TF and ONNX Runtime are compared on real faces
  (export.parity). `DIR/report.json` holds the metrics (validation one view, and the
  mean over each crop and its mirror as the fused default model does) and the parity,
  `DIR/keras.weights.h5` the Keras weights.

TensorFlow uses a GPU when it sees one; on a CPU it runs, slowly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.paths import BACKBONE_MODEL
from training.keras_backbones import N_AGE_CLASSES, SPECS, KerasSpec

ARCHES = ("faceres", "simple_cnn")
SCHEDULES = ("cosine", "constant")
DEFAULT_FACERES = BACKBONE_MODEL
DEFAULT_CACHE = Path("cache/finetune")
AGE_LOSS_SCALE = 0.1  # an age error of 10 years weighs as much as a BCE of 1 (chance is ~0.69)
OUTPUTS = ("p_male", "age_probs", "embedding")


@dataclass(frozen=True)
class FinetuneConfig:
    arch: str = "faceres"
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 0.0  # 0: 1e-4 for pretrained faceres, 1e-3 from scratch
    schedule: str = "cosine"  # "cosine" decays the rate to 0 over the run; "constant"
    separate_age_by_gender: bool = False
    limit: int | None = None
    train_sources: tuple[str, ...] = ()  # empty: every source; else train on these only (validation keeps all)
    split: bool = False
    split_seed: int = 0
    val_fraction: float = 0.2
    seed: int = 0
    parity_faces: int = 16

    def lr(self) -> float:
        return self.learning_rate or (1e-4 if self.arch == "faceres" else 1e-3)


# ----------------------------------------------------------------------------- crops


@dataclass(frozen=True)
class CropSet:
    files: np.ndarray  # str, as in labels.csv
    crops: np.ndarray  # (N, S, S, 3) uint8 BGR
    face_found: np.ndarray  # bool


def crop_cache_path(cache: Path, files: np.ndarray, spec: KerasSpec) -> Path:
    """One cache file per (file list, size, margin): a different selection never reuses it."""
    digest = hashlib.sha256("\n".join(files.tolist()).encode()).hexdigest()[:16]
    return cache / f"crops-{spec.input_size}px-m{spec.crop_margin:g}-{len(files)}-{digest}.npz"


def load_crops(labels, index: np.ndarray, spec: KerasSpec, cache: Path) -> CropSet:
    """Crops of labels rows `index` through the live detector and crop, cached as uint8."""
    from training.bottlenecks import CropReader

    files = labels.file[index]
    path = crop_cache_path(cache, files, spec)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            print(f"[crops] {len(files)} crops from {path}", flush=True)
            return CropSet(data["files"], data["crops"], data["face_found"])
    t0 = time.perf_counter()
    reader = CropReader([(labels.file[i], labels.path(i), int(i)) for i in index], spec.input_size, spec.crop_margin)
    reader.start()
    got: dict[str, tuple[np.ndarray | None, bool]] = {}
    while (item := reader.queue.get()) is not None:
        got[item[0]] = (item[1], item[2])
    if reader.error is not None:
        raise reader.error
    unreadable = [f for f in files if got[f][0] is None]
    if unreadable:
        raise SystemExit(f"cannot read {len(unreadable)} images, e.g. {labels.root / unreadable[0]}")
    crops = CropSet(files, np.stack([got[f][0] for f in files]), np.array([got[f][1] for f in files]))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **asdict(crops))
    print(f"[crops] {len(files)} crops ({(~crops.face_found).sum()} without a detected face) in "
          f"{time.perf_counter() - t0:.0f} s, cached in {path}", flush=True)
    return crops


# ----------------------------------------------------------------------------- models


def age_mixture(p_male, male_probs, female_probs):
    """P(male) * male head + (1 - P(male)) * female head: a distribution over ages whose
    expectation is the gender-weighted mix of the two heads' ages."""
    from keras import ops

    return ops.add(ops.multiply(p_male, male_probs), ops.multiply(ops.subtract(1.0, p_male), female_probs))


def build_model(arch: str, separate_age_by_gender: bool, faceres_path: Path = DEFAULT_FACERES, seed: int = 0):
    """Keras model: preprocessed input -> dict of p_male (N,1), age_probs (N,100),
    embedding (N,D), and with separate heads also age_probs_male / age_probs_female."""
    import keras
    from keras import layers

    from training.keras_backbones import faceres_base, load_faceres_weights, onnx_layer_weights, simple_cnn_base

    keras.utils.set_random_seed(seed)
    if arch == "faceres":
        if not Path(faceres_path).is_file():
            raise SystemExit(f"faceres ONNX model not found: {faceres_path}")
        base = faceres_base()
    elif arch == "simple_cnn":
        base = simple_cnn_base()
    else:
        raise SystemExit(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHES)}")
    embedding = base.output
    feats = layers.Dense(256, activation="relu", name="feats")(embedding)
    if arch == "simple_cnn":
        feats = layers.Dropout(0.3, name="feats_dropout")(feats)
    p_male = layers.Dense(1, activation="sigmoid", name="gender_pred")(feats)
    outputs = {"p_male": p_male, "embedding": embedding}
    if separate_age_by_gender:
        male = layers.Dense(N_AGE_CLASSES, activation="softmax", name="age_pred_male")(feats)
        female = layers.Dense(N_AGE_CLASSES, activation="softmax", name="age_pred_female")(feats)
        outputs.update(age_probs_male=male, age_probs_female=female, age_probs=age_mixture(p_male, male, female))
    else:
        outputs["age_probs"] = layers.Dense(N_AGE_CLASSES, activation="softmax", name="age_pred")(feats)
    model = keras.Model(base.input, outputs, name=f"finetune_{arch}")
    if arch == "faceres":
        # backbone, feats and gender head from the ONNX file; the age head too, into both
        # per-gender heads when there are two (training moves them apart)
        weights = onnx_layer_weights(faceres_path)
        load_faceres_weights(model, weights, heads=not separate_age_by_gender)
        if separate_age_by_gender:
            model.get_layer("feats").set_weights(weights[-3][1])
            model.get_layer("gender_pred").set_weights(weights[-2][1])
            for name in ("age_pred_male", "age_pred_female"):
                model.get_layer(name).set_weights(weights[-1][1])
    return model


def export_outputs(raw: dict) -> dict:
    """The outputs the ONNX file keeps (the per-gender heads stay internal)."""
    return {name: raw[name] for name in OUTPUTS}


# ----------------------------------------------------------------------------- training


def shuffled_batches(n: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of one epoch: a fresh permutation cut into batches (the last may be short)."""
    order = rng.permutation(n)
    return [order[start : start + batch] for start in range(0, n, batch)]


def training_batch(crops: np.ndarray, index: np.ndarray, spec: KerasSpec, rng: np.random.Generator) -> np.ndarray:
    """Preprocessed crops of rows `index`, half of them mirrored (the detector's crops are
    already aligned by its keypoints, so a mirror is the one augmentation that is free).

    Gathering per batch from the uint8 array keeps memory at one copy of the crops: a
    tf.data pipeline over 30,000 crops held two more (its tensor and its shuffle buffer)."""
    from training.keras_backbones import preprocess

    x = crops[index]
    flip = rng.random(len(x)) < 0.5
    x[flip] = x[flip, :, ::-1]
    return preprocess(x, spec)


def expected_age(probs):
    import tensorflow as tf

    return tf.linalg.matvec(probs, tf.range(probs.shape[-1], dtype=tf.float32))


def losses(outputs: dict, male, age, known, separate: bool) -> tuple[Any, Any]:
    """(gender BCE, L1 of the expected age over faces with a known age)."""
    import tensorflow as tf

    p = tf.clip_by_value(tf.reshape(outputs["p_male"], [-1]), 1e-6, 1 - 1e-6)
    bce = -tf.reduce_mean(male * tf.math.log(p) + (1 - male) * tf.math.log(1 - p))
    if separate:
        # each face trains its true gender's head only (prototype 2)
        estimate = male * expected_age(outputs["age_probs_male"]) + (1 - male) * expected_age(outputs["age_probs_female"])
    else:
        estimate = expected_age(outputs["age_probs"])
    l1 = tf.reduce_sum(tf.abs(estimate - age) * known) / tf.maximum(tf.reduce_sum(known), 1.0)
    return bce, l1


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    gender_bce: float
    age_l1: float
    seconds: float


def learning_rate(cfg: FinetuneConfig, steps: int):
    """Adam's rate: cosine decay from cfg.lr() to 0 over the run, or constant."""
    import keras

    if cfg.schedule == "cosine" and steps > 0:
        return keras.optimizers.schedules.CosineDecay(cfg.lr(), decay_steps=steps)
    return cfg.lr()


def train(model, crops: np.ndarray, targets: tuple[np.ndarray, np.ndarray], spec: KerasSpec, cfg: FinetuneConfig,
          checkpoint: Path | None = None, prior: tuple[EpochLog, ...] = ()) -> list[EpochLog]:
    """Train on uint8 crops with targets (male, age with NaN unknown); after every epoch
    the weights go to `checkpoint` (atomically) with the epochs behind them (`prior`, the
    epochs of the weights it started from, then this run's), so a stopped run keeps its
    last epoch."""
    import keras
    import tensorflow as tf

    male, age = targets
    known = np.isfinite(age)
    age0 = np.where(known, age, 0).astype(np.float32)
    steps_per_epoch = -(-len(crops) // cfg.batch_size)
    optimizer = keras.optimizers.Adam(learning_rate(cfg, steps_per_epoch * cfg.epochs))
    weights = model.trainable_variables
    rng = np.random.default_rng(cfg.seed)

    # nothing for AutoGraph to convert (no Python control flow); its parser fails on this
    # closure with the installed versions and warns
    @tf.function(reduce_retracing=True)
    @tf.autograph.experimental.do_not_convert
    def step(x, male, age, known):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            bce, l1 = losses(out, male, age, known, cfg.separate_age_by_gender)
            loss = bce + AGE_LOSS_SCALE * l1
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return bce, l1

    history = []
    for epoch in range(len(prior) + 1, len(prior) + cfg.epochs + 1):
        t0, sums, n = time.perf_counter(), np.zeros(2), 0
        for index in shuffled_batches(len(crops), cfg.batch_size, rng):
            x = training_batch(crops, index, spec, rng)
            bce, l1 = step(x, male[index].astype(np.float32), age0[index], known[index].astype(np.float32))
            sums += [float(bce), float(l1)]
            n += 1
            if n % 100 == 0:
                print(f"[train] epoch {epoch}: {n}/{steps_per_epoch} batches, {time.perf_counter() - t0:.0f} s", flush=True)
        log = EpochLog(epoch, sums[0] / max(n, 1), sums[1] / max(n, 1), round(time.perf_counter() - t0, 1))
        history.append(log)
        print(f"[train] epoch {epoch}/{len(prior) + cfg.epochs}: gender BCE {log.gender_bce:.4f}, age L1 {log.age_l1:.2f} y, {log.seconds:.0f} s", flush=True)
        if checkpoint is not None:
            save_checkpoint(model, checkpoint, [*prior, *history])
    return history


def epochs_path(weights: Path) -> Path:
    """checkpoint.weights.h5 -> checkpoint.json: where the epochs behind the weights are kept."""
    return weights.with_name(weights.name.replace(".weights.h5", "") + ".json")


def save_checkpoint(model, path: Path, history: list[EpochLog]) -> None:
    """Weights and the epochs behind them, each written whole before it replaces the last."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("partial-" + path.name)  # Keras insists on the .weights.h5 suffix
    model.save_weights(str(tmp))
    os.replace(tmp, path)
    log = epochs_path(path)
    log.with_suffix(".tmp").write_text(json.dumps([asdict(h) for h in history], indent=2))
    os.replace(log.with_suffix(".tmp"), log)


def prior_epochs(weights: Path | None) -> tuple[EpochLog, ...]:
    """The epochs recorded beside starting weights; none for weights without a record."""
    if weights is None or not epochs_path(weights).is_file():
        return ()
    return tuple(EpochLog(**e) for e in json.loads(epochs_path(weights).read_text()))


def predict(model, crops: np.ndarray, spec: KerasSpec, batch: int = 64, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """P(male) and expected age for uint8 crops, as the exported model computes them;
    with `flip`, the mean over each crop and its mirror (of the gender logit and the
    age), as the fused LightGBM model averages its features."""
    from training.backbones import gender_logit, mirror
    from training.keras_backbones import preprocess

    def one_pass(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = model(preprocess(images, spec), training=False)
        probs = np.asarray(out["age_probs"], np.float64)
        return np.asarray(out["p_male"]).reshape(-1), probs @ np.arange(probs.shape[1]) / probs.sum(1)

    p_parts, age_parts = [], []
    for start in range(0, len(crops), batch):
        part = crops[start : start + batch]
        p, age = one_pass(part)
        if flip:
            p_m, age_m = one_pass(mirror(part))
            p = 1 / (1 + np.exp(-(gender_logit(p) + gender_logit(p_m)) / 2))
            age = (age + age_m) / 2
        p_parts.append(p)
        age_parts.append(age)
    return np.concatenate(p_parts), np.concatenate(age_parts)


def evaluate(model, crops: CropSet, labels, spec: KerasSpec, flip: bool = False) -> dict[str, Any]:
    from training.metrics import age_metrics, gender_metrics

    p_male, age = predict(model, crops.crops, spec, flip=flip)
    rows = labels.align(crops.files)
    gender = gender_metrics(rows.male, p_male)
    ages = age_metrics(rows.age, age, {"source": rows.source})
    by_source = {
        source: round(float(np.mean((p_male[rows.source == source] >= 0.5) == rows.male[rows.source == source])), 4)
        for source in np.unique(rows.source)
    }
    return {
        "n": int(len(rows)),
        "mirror_averaged": flip,
        "gender_accuracy": gender["accuracy"],
        "gender_by_source": by_source,
        "gender_roc_auc": gender["roc_auc"],
        "age_mae": ages["mae"],
        "age_by_source": {k: v["mae"] for k, v in ages["by_group"].get("source", {}).items()},
    }


# ----------------------------------------------------------------------------- export


def metadata(cfg: FinetuneConfig, spec: KerasSpec, input_name: str, metrics: dict, command: str, labels_path: Path, n_train: int,
             prior: tuple[EpochLog, ...] = ()):
    from realtime.metadata import ModelMetadata

    separate = " with separate male/female age heads mixed by P(male)" if cfg.separate_age_by_gender else ""
    start = "faceres weights (models/faceres.onnx, HSE MobileNet / VGGFace2)" if cfg.arch == "faceres" else "random weights"
    return ModelMetadata(
        name=f"finetune-{cfg.arch}" + ("-agebygender" if cfg.separate_age_by_gender else ""),
        version=time.strftime("%Y%m%d-%H%M"),
        input_name=input_name,
        **spec.input_fields(),
        gender_output="p_male",
        age_output="age_probs",
        age_kind="softmax",
        embedding_output="embedding",
        license=("faceres backbone: MIT (models/LICENSE.faceres); " if cfg.arch == "faceres" else "")
        + "fine-tuned on UTKFace (non-commercial research use only) and IMDB-WIKI wiki_crop portraits: research use",
        provenance=f"training.finetune {cfg.arch} from {start}{separate}, {len(prior) + cfg.epochs} epochs, Adam lr {cfg.lr():g} ({cfg.schedule}), "
        f"batch {cfg.batch_size}; `{command}`; tf2onnx opset 17",
        training_data=f"{labels_path.name} ({n_train} faces{', train split seed %d' % cfg.split_seed if cfg.split else ''}"
        f"{', sources: ' + ', '.join(cfg.train_sources) if cfg.train_sources else ''}); "
        "crops by the live detector and training.facecrops",
        metrics=metrics,
    )


def parity(model, proto, meta, n_faces: int) -> dict[str, Any]:
    """TF vs ONNX Runtime on real faces (export.parity), through P(male) and age."""
    from export.keras import real_face_batches, tf_runner
    from export.parity import compare_runners, ort_runner

    batches = real_face_batches(meta, n_faces)
    report = compare_runners(tf_runner(model, export_outputs), ort_runner(proto.SerializeToString()), batches, meta)
    return asdict(report)  # full precision: as_dict rounds differences of 1e-7 to 0


# ----------------------------------------------------------------------------- CLI


def select_rows(labels, cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of labels: a fixed shuffle cut to --limit, then split;
    --train-source keeps the training rows of those sources and every source's validation
    rows, so a source the network never saw is scored beside the ones it did."""
    from training.bottlenecks import processing_order
    from training.splits import validation_mask

    order = processing_order(len(labels), cfg.seed)
    if cfg.limit is not None:
        order = order[: cfg.limit]
    order = np.sort(order)
    if cfg.train_sources:
        unknown = sorted(set(cfg.train_sources) - set(np.unique(labels.source).tolist()))
        if unknown:
            raise SystemExit(f"--train-source {unknown[0]!r} is not a source of the labels "
                             f"(they have: {', '.join(sorted(np.unique(labels.source).tolist()))})")
    if not cfg.split:
        return source_rows(labels, order, cfg.train_sources), np.zeros(0, np.int64)
    val = validation_mask(labels, cfg.split_seed, cfg.val_fraction)
    return source_rows(labels, order[~val[order]], cfg.train_sources), order[val[order]]


def source_rows(labels, rows: np.ndarray, sources: tuple[str, ...]) -> np.ndarray:
    return rows[np.isin(labels.source[rows], sources)] if sources else rows


def check_run(labels_path: Path, cfg: FinetuneConfig, faceres: Path) -> KerasSpec:
    """The architecture's spec, once the options and input files are known to be usable."""
    if not labels_path.is_file():
        raise SystemExit(f"labels file not found: {labels_path}")
    if cfg.epochs < 0 or cfg.batch_size < 1:
        raise SystemExit("--epochs must be >= 0 and --batch >= 1")
    if cfg.schedule not in SCHEDULES:
        raise SystemExit(f"unknown schedule {cfg.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    spec = SPECS[cfg.arch] if cfg.arch in ARCHES else None
    if spec is None:
        raise SystemExit(f"unknown --arch {cfg.arch!r}: choose one of {', '.join(ARCHES)}")
    if cfg.arch == "faceres" and not Path(faceres).is_file():
        raise SystemExit(f"faceres ONNX model not found: {faceres} (pass --faceres)")
    return spec


def read_labels(labels_path: Path):
    from training.labels import load_labels

    try:
        return load_labels(labels_path)
    except ValueError as exc:  # a malformed labels.csv: say which, without a traceback
        raise SystemExit(f"{labels_path}: {exc}") from None


def record_metrics(metrics: dict[str, Any], key: str, value: dict, what: str) -> None:
    metrics[key] = value
    print(f"[metrics] {what}: {json.dumps(value)}", flush=True)


def checked_onnx(model, spec: KerasSpec, meta, cfg: FinetuneConfig, metrics: dict[str, Any]):
    """The trained model as ONNX, refused when it does not match TensorFlow on real faces."""
    from export.keras import keras_to_onnx

    proto = keras_to_onnx(model, meta.input_name, spec.input_size, export_outputs)
    if cfg.parity_faces:
        metrics["parity_tf_vs_onnx"] = p = parity(model, proto, meta, cfg.parity_faces)
        print(f"[parity] TF vs ONNX on real faces: {p}", flush=True)
        if p["max_abs_p_male"] > 1e-3 or p["max_abs_age"] > 0.05:
            raise SystemExit(f"parity check failed: {p}")
    return proto


def run(labels_path: Path, out: Path, cfg: FinetuneConfig, cache: Path = DEFAULT_CACHE, faceres: Path = DEFAULT_FACERES,
        command: str = "", init_weights: Path | None = None) -> dict[str, Any]:
    """Fine-tune, measure, check and write out/model.onnx, keras.weights.h5 and report.json;
    `init_weights` (Keras weights of the same architecture, a checkpoint say) replaces the
    starting point, to go on from a stopped run or to export one with no more epochs."""
    import onnx
    import tensorflow as tf

    from export.metadata import write_metadata

    spec = check_run(labels_path, cfg, faceres)
    if init_weights is not None and not init_weights.is_file():
        raise SystemExit(f"weights file not found: {init_weights}")
    t0 = time.perf_counter()
    print(f"[device] TensorFlow sees {[d.name for d in tf.config.list_physical_devices('GPU')] or 'no GPU: training on the CPU'}", flush=True)
    labels = read_labels(labels_path)
    train_rows, val_rows = select_rows(labels, cfg)
    if len(train_rows) == 0:
        raise SystemExit("no training rows selected (check --limit, --train-source and --split)")
    train_crops = load_crops(labels, train_rows, spec, cache)
    val_crops = load_crops(labels, val_rows, spec, cache) if len(val_rows) else None

    model = build_model(cfg.arch, cfg.separate_age_by_gender, faceres, cfg.seed)
    if init_weights is not None:
        model.load_weights(str(init_weights))
    metrics: dict[str, Any] = {}
    if val_crops is not None and cfg.arch == "faceres" and init_weights is None:
        # the pretrained starting point on the same rows: what the fine-tune has to beat
        record_metrics(metrics, "validation_before_training", evaluate(model, val_crops, labels, spec), "validation before training")
    rows = labels.subset(train_rows)
    prior = prior_epochs(init_weights)
    history = train(model, train_crops.crops, (rows.male, rows.age), spec, cfg, out / "checkpoint.weights.h5", prior)
    if val_crops is not None:
        record_metrics(metrics, "validation", evaluate(model, val_crops, labels, spec), "validation")
        record_metrics(metrics, "validation_mirror_averaged", evaluate(model, val_crops, labels, spec, flip=True),
                       "validation, mean over each crop and its mirror")
        metrics["validation_split"] = {"seed": cfg.split_seed, "val_fraction": cfg.val_fraction}
    else:
        record_metrics(metrics, "train", evaluate(model, train_crops, labels, spec), "training rows (no --split)")

    meta = metadata(cfg, spec, model.inputs[0].name, metrics, command or "training.finetune", labels_path, len(train_rows), prior)
    proto = checked_onnx(model, spec, meta, cfg, metrics)
    write_metadata(proto, meta)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out / "model.onnx"))
    model.save_weights(str(out / "keras.weights.h5"))
    report = {
        "out": str(out / "model.onnx"),
        "config": asdict(cfg),
        "init_weights": str(init_weights) if init_weights else None,
        "train_faces": int(len(train_rows)),
        "validation_faces": int(len(val_rows)),
        "history": [asdict(h) for h in (*prior, *history)],
        "metrics": metrics,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    from training.keras_backbones import limit_threads
    from training.labels import DEFAULT_LABELS

    parser = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    parser.add_argument("--out", type=Path, required=True, help="folder for model.onnx, report.json, keras.weights.h5")
    parser.add_argument("--arch", choices=ARCHES, default="faceres")
    parser.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    parser.add_argument("--batch", type=int, default=FinetuneConfig.batch_size)
    parser.add_argument("--lr", type=float, default=0.0, help="Adam learning rate (default 1e-4 for faceres, 1e-3 for simple_cnn)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=FinetuneConfig.schedule, help="learning-rate schedule over the run (default: %(default)s)")
    parser.add_argument("--init-weights", type=Path, default=None, help="start from these Keras weights (a run's checkpoint.weights.h5 or keras.weights.h5)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces of a fixed shuffle")
    parser.add_argument("--separate-age-by-gender", action="store_true", help="one age head per gender, mixed by P(male)")
    parser.add_argument("--train-source", action="append", default=[], metavar="SOURCE",
                        help="train on this source's faces only (repeatable; validation still scores every source)")
    parser.add_argument("--split", action="store_true", help="train on the train split only and report validation metrics")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--faceres", type=Path, default=DEFAULT_FACERES, help="ONNX file with the pretrained faceres weights")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the cached crops (default: %(default)s)")
    parser.add_argument("--parity-faces", type=int, default=16, help="real faces for the TF vs ONNX check (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: its default)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be positive")
    limit_threads(args.threads)
    cfg = FinetuneConfig(
        arch=args.arch, epochs=args.epochs, batch_size=args.batch, learning_rate=args.lr, schedule=args.schedule,
        separate_age_by_gender=args.separate_age_by_gender, limit=args.limit, split=args.split,
        train_sources=tuple(args.train_source),
        split_seed=args.split_seed, val_fraction=args.val_fraction, seed=args.seed, parity_faces=args.parity_faces,
    )
    command = "python -m training.finetune " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = run(args.labels, args.out, cfg, args.cache, args.faceres, command, args.init_weights)
    print(json.dumps({k: report[k] for k in ("out", "train_faces", "validation_faces", "metrics", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
