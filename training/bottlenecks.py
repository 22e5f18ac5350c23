"""Bottleneck features of every labelled face, cached and resumable.

    python -m training.bottlenecks --backbone models/faceres.onnx \\
        --labels ../shared/data/faces/labels.csv --out cache/features/faceres.npz [--flip]

Each image goes through the live pipeline's detector and crop
(`training.facecrops.crop_for_model`, margin = the backbone's `crop_margin`), then the
backbone (`training.backbones`). Results are written in shards of about 1000 images
under `<out>.parts/`; a rerun skips the files the shards already hold, so an
interrupted run resumes where it stopped. When every selected file is done the shards
are merged into `<out>`, an npz with, in labels.csv order:

- `files`: paths as in labels.csv
- `features` (N, D) float32: the embedding, then (unless --no-head-features) the
  pretrained heads' `gender_logit` and `age_mean` (see training.backbones); with
  --flip the mean of the crop's and its mirror's features, and `features_noflip` too
- `feature_names`, `face_found` (bool), `detector_score`
- `pretrained_p_male`, `pretrained_age`: the backbone's own predictions (no flip)
- `spec`: JSON with the backbone, its sha256, crop margin, flip and feature layout;
  `training.heads` copies it and `export.lightgbm` rebuilds the features from it.

Where the detector finds no face the whole image is the crop (as facecrops does);
those rows are flagged in `face_found` and counted in the log.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.backbones import (
    Embedding,
    age_expectation,
    feature_names,
    feature_rows,
    load_backbone,
    mirror,
)
from training.degrade import DEGRADATIONS, DegradationError, degraded_input, parse_degradations, record_rng
from training.labels import load_labels
from training.splits import validation_mask

DEFAULT_BACKBONE = Path("models/faceres.onnx")
RAW_KEYS = ("embedding", "p_male", "age_probs")


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def processing_order(n: int, seed: int) -> np.ndarray:
    """A fixed shuffle of the rows, so that partial runs (--limit) cover every source."""
    return np.random.default_rng(seed).permutation(n)


def load_shards(directory: Path) -> dict[str, np.ndarray]:
    shards = sorted(directory.glob("shard-*.npz"))
    if not shards:
        return {}
    loaded = [dict(np.load(p, allow_pickle=False)) for p in shards]
    return {key: np.concatenate([s[key] for s in loaded]) for key in loaded[0]}


def write_shard(directory: Path, arrays: dict[str, np.ndarray]) -> Path:
    existing = sorted(directory.glob("shard-*.npz"))
    index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    path = directory / f"shard-{index:05d}.npz"
    tmp = directory / f".tmp-{index:05d}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def check_manifest(directory: Path, manifest: dict) -> None:
    path = directory / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        keys = ("backbone_sha256", "flip", "crop_margin", "input_size")
        diff = [k for k in keys if old.get(k) != manifest.get(k)]
        if diff:
            raise SystemExit(
                f"{directory} holds shards made with other settings ({', '.join(diff)}); "
                "choose another --out or delete that folder"
            )
    else:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=2))


@dataclass(frozen=True)
class Augment:
    """Each image degraded by one of `names` (training.degrade), drawn per image from a
    generator seeded by (seed, the image's row in labels.csv): the camera effects the
    evaluation measures, applied to training faces the way serving meets them."""

    names: tuple[str, ...]
    seed: int = 0

    def choose(self, row: int) -> tuple[str, np.random.Generator]:
        rng = record_rng(self.seed, row)
        return self.names[int(rng.integers(len(self.names)))], rng


class CropReader(threading.Thread):
    """Reads and crops images in a background thread while the backbone runs."""

    def __init__(self, paths: list[tuple[str, Path, int]], size: int, margin: float, augment: Augment | None = None) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.size = size
        self.margin = margin
        self.augment = augment
        self.queue: queue.Queue = queue.Queue(maxsize=256)
        self.error: BaseException | None = None

    def run(self) -> None:
        from realtime.detection import DetectorOptions, FaceDetector
        from training.facecrops import crop_for_model

        try:
            with FaceDetector.create_from_options(DetectorOptions()) as detector:
                for name, path, row in self.paths:
                    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                    if image is None:
                        self.queue.put((name, None, False, 0.0))
                        continue
                    cropper = detector
                    if self.augment is not None:
                        chosen, rng = self.augment.choose(row)
                        image, cropper = degraded_input(image, detector, DEGRADATIONS[chosen], rng)
                    result = crop_for_model(image, cropper, self.size, self.margin)
                    self.queue.put((name, result.crop, result.face_found, result.score))
        except BaseException as exc:  # surfaced by the consumer
            self.error = exc
        finally:
            self.queue.put(None)


def extraction_manifest(backbone_path: Path, backbone, flip: bool, augment: Augment | None = None) -> dict[str, Any]:
    """What the shards of one extraction must agree on to be resumed and merged."""
    manifest = {
        "backbone": str(backbone_path),
        "backbone_name": backbone.name,
        "backbone_sha256": getattr(backbone, "sha256", ""),
        "flip": flip,
        "crop_margin": backbone.crop_margin,
        "input_size": backbone.input_size,
    }
    if augment is not None:  # absent otherwise, so earlier extractions still resume
        manifest["augment"] = {"names": list(augment.names), "seed": augment.seed}
    return manifest


def extract(
    backbone_path: Path,
    labels_path: Path,
    out: Path,
    limit: int | None = None,
    flip: bool = False,
    head_features: bool = True,
    batch_size: int = 32,
    shard_size: int = 1000,
    threads: int = 0,
    seed: int = 0,
    progress: bool = True,
    augment: Augment | None = None,
    subset: str = "all",
) -> dict:
    """Extract (or resume) and merge; returns a summary dict."""
    labels = load_labels(labels_path)
    backbone = load_backbone(backbone_path, threads)
    if head_features and not getattr(backbone, "has_heads", False):
        raise SystemExit(f"{backbone_path} has no pretrained heads: use --no-head-features")
    order = processing_order(len(labels), seed)
    if subset != "all":
        val = validation_mask(labels)
        order = order[val[order] == (subset == "val")]
    if limit is not None:
        order = order[:limit]
    selected = labels.file[order]

    directory = parts_dir(out)
    manifest = extraction_manifest(backbone_path, backbone, flip, augment)
    check_manifest(directory, manifest)
    done = load_shards(directory)
    done_files = set(done["files"].tolist()) if done else set()
    todo = [i for i in order if labels.file[i] not in done_files]
    print(
        f"{len(selected)} faces selected, {len(selected) - len(todo)} already in {directory}, {len(todo)} to do",
        flush=True,
    )

    started = time.perf_counter()
    if todo:
        reader = CropReader([(labels.file[i], labels.path(i), int(i)) for i in todo], backbone.input_size, backbone.crop_margin, augment)
        reader.start()
        run_batches(backbone, reader, directory, len(todo), flip, batch_size, shard_size, progress)
        if reader.error is not None:
            raise reader.error
    elapsed = time.perf_counter() - started

    done = load_shards(directory)
    summary = merge(done, selected, labels.file, out, manifest, flip, head_features)
    summary["seconds_this_run"] = round(elapsed, 1)
    summary["images_this_run"] = len(todo)
    print(json.dumps(summary, indent=2), flush=True)
    return summary


Item = tuple[str, "np.ndarray | None", bool, float]  # file, crop (None: unreadable), face found, detector score


def embed_batch(backbone, batch: list[Item], flip: bool) -> dict[str, Embedding]:
    """Raw backbone outputs of a batch of crops, keyed "" and, with flip, "_m" for the mirrors
    (an unreadable image's crop is black; its row is marked unreadable)."""
    size = backbone.input_size
    crops = np.stack([c if c is not None else np.zeros((size, size, 3), np.uint8) for _, c, _, _ in batch])
    parts = {"": backbone.embed(crops)}
    if flip:
        parts["_m"] = backbone.embed(mirror(crops))
    return parts


class ShardBuffer:
    """Embedded crops collected until they are written as one shard."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pending: dict[str, list] = {"files": [], "face_found": [], "detector_score": [], "readable": []}
        self.raw: dict[str, list] = {}

    def add(self, batch: list[Item], parts: dict[str, Embedding]) -> None:
        for suffix, emb in parts.items():
            for key in RAW_KEYS:
                value = getattr(emb, key)
                if value is not None:
                    self.raw.setdefault(key + suffix, []).append(value)
        for name, crop, found, score in batch:
            self.pending["files"].append(name)
            self.pending["face_found"].append(found)
            self.pending["detector_score"].append(score)
            self.pending["readable"].append(crop is not None)

    def write(self) -> None:
        if not self.pending["files"]:
            return
        arrays = {
            "files": np.array(self.pending["files"]),
            "face_found": np.array(self.pending["face_found"], bool),
            "detector_score": np.array(self.pending["detector_score"], np.float32),
            "readable": np.array(self.pending["readable"], bool),
        }
        arrays.update({k: np.concatenate(v).astype(np.float32) for k, v in self.raw.items()})
        write_shard(self.directory, arrays)
        for v in self.pending.values():
            v.clear()
        self.raw.clear()


def extraction_progress(interactive: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]bottlenecks"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} img/s, no face {task.fields[no_face]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not interactive,
    )


def run_batches(
    backbone,
    reader: CropReader,
    directory: Path,
    total: int,
    flip: bool,
    batch_size: int,
    shard_size: int,
    progress: bool,
) -> None:
    """Embed the reader's crops in batches and write them in shards of `shard_size` images."""
    shard = ShardBuffer(directory)
    batch: list[Item] = []
    count, no_face, unreadable = 0, 0, 0
    t0 = time.perf_counter()
    interactive = progress and sys.stdout.isatty()

    def flush_batch() -> None:
        if batch:
            shard.add(batch, embed_batch(backbone, batch, flip))
            batch.clear()

    with extraction_progress(interactive) as bar:
        task = bar.add_task("extract", total=total, rate=0.0, no_face=0)
        for item in iter(reader.queue.get, None):
            batch.append(item)
            count += 1
            no_face += not item[2]
            unreadable += item[1] is None
            if len(batch) >= batch_size:
                flush_batch()
            if count % shard_size == 0:
                flush_batch()
                shard.write()
                rate = count / (time.perf_counter() - t0)
                if not interactive:
                    eta = (total - count) / max(rate, 1e-9)
                    print(f"{count}/{total} images, {rate:.1f} img/s, no face {no_face}, unreadable {unreadable}, ETA {eta / 60:.1f} min", flush=True)
            bar.update(task, completed=count, rate=count / (time.perf_counter() - t0), no_face=no_face)
        flush_batch()
        shard.write()


def merge(
    done: dict[str, np.ndarray],
    selected: np.ndarray,
    all_files: np.ndarray,
    out: Path,
    manifest: dict,
    flip: bool,
    head_features: bool,
) -> dict:
    """The npz for the selected files, rows in labels.csv order."""
    position = {f: i for i, f in enumerate(done["files"])}
    wanted = set(selected.tolist())
    ordered = [f for f in all_files if f in wanted]
    index = np.array([position[f] for f in ordered], dtype=np.int64)
    readable = done["readable"][index]
    index, ordered = index[readable], [f for f, r in zip(ordered, readable) if r]
    arrays = {"files": np.array(ordered), **feature_arrays(done, index, manifest, flip, head_features)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return {
        "out": str(out),
        "faces": len(ordered),
        "unreadable": int((~readable).sum()),
        "no_face_found": int((~arrays["face_found"]).sum()),
        "feature_dim": int(arrays["features"].shape[1]),
        "flip": flip,
    }


def feature_arrays(done: dict[str, np.ndarray], index: np.ndarray, manifest: dict, flip: bool, head_features: bool) -> dict[str, np.ndarray]:
    """The npz's arrays but `files` for the shard rows `index`: feature rows from the raw outputs."""

    def emb(suffix: str) -> Embedding:
        return Embedding(
            done["embedding" + suffix][index],
            done["p_male" + suffix][index] if "p_male" + suffix in done else None,
            done["age_probs" + suffix][index] if "age_probs" + suffix in done else None,
        )

    plain = emb("")
    features_noflip = feature_rows(plain, head_features)
    features = features_noflip
    if flip:
        features = ((features_noflip + feature_rows(emb("_m"), head_features)) / np.float32(2)).astype(np.float32)
    spec = {
        **manifest,
        "head_features": head_features,
        "embedding_dim": int(plain.embedding.shape[1]),
        "feature_dim": int(features.shape[1]),
        "features": "embedding" + ("+gender_logit+age_mean" if head_features else "") + (" (flip mean)" if flip else ""),
    }
    arrays = {
        "features": features,
        "feature_names": np.array(feature_names(plain.embedding.shape[1], head_features)),
        "face_found": done["face_found"][index],
        "detector_score": done["detector_score"][index],
        "spec": np.array(json.dumps(spec)),
    }
    if flip:
        arrays["features_noflip"] = features_noflip
    if plain.p_male is not None and plain.age_probs is not None:
        arrays["pretrained_p_male"] = plain.p_male
        arrays["pretrained_age"] = age_expectation(plain.age_probs)
    return arrays


def merge_partial(labels_path: Path, out: Path, head_features: bool = True) -> dict:
    """Merge whatever the shards of `out` hold so far (the extraction may still run)."""
    directory = parts_dir(out)
    manifest = json.loads((directory / "manifest.json").read_text())
    done = load_shards(directory)
    if not done:
        raise SystemExit(f"no shards in {directory} yet")
    labels = load_labels(labels_path)
    summary = merge(done, done["files"], labels.file, out, manifest, manifest["flip"], head_features)
    print(json.dumps(summary, indent=2), flush=True)
    return summary


def load_features(path: str | Path, key: str = "features") -> tuple[np.ndarray, np.ndarray, dict]:
    """(files, features, spec) from an npz written here (spec is {} if absent)."""
    with np.load(path, allow_pickle=False) as data:
        files = data["files"]
        features = data[key].astype(np.float32)
        spec = json.loads(str(data["spec"])) if "spec" in data else {}
    if len(files) != len(features):
        raise ValueError(f"{path}: {len(files)} files but {len(features)} feature rows")
    return files, features, spec


def augment_names(text: str) -> tuple[str, ...]:
    try:
        return parse_degradations(text)
    except DegradationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", type=Path, default=DEFAULT_BACKBONE, help="ONNX backbone with metadata (default: %(default)s)")
    parser.add_argument("--labels", type=Path, required=True, help="labels.csv of shared/data/faces")
    parser.add_argument("--out", type=Path, required=True, help="output .npz (shards go to <out>.parts/)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces of a fixed shuffle")
    parser.add_argument("--flip", action="store_true", help="average each crop's features with its mirror's")
    parser.add_argument("--no-head-features", dest="head_features", action="store_false", help="embedding only, without the pretrained heads' two outputs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the processing order")
    parser.add_argument("--subset", choices=("all", "train", "val"), default="all", help="only the faces of one split (training.splits; default all)")
    parser.add_argument("--augment", type=augment_names, default=None, metavar="NAME[,NAME...]|all",
                        help="degrade each image by one of these (training.degrade), drawn per image, before detection or at the crop")
    parser.add_argument("--augment-seed", type=int, default=0)
    parser.add_argument("--merge-only", action="store_true", help="write <out> from the shards done so far, extract nothing (for a look at a run in progress)")
    args = parser.parse_args(argv)
    if args.merge_only:
        merge_partial(args.labels, args.out, args.head_features)
        return 0
    extract(args.backbone, args.labels, args.out, limit=args.limit, flip=args.flip, head_features=args.head_features,
            batch_size=args.batch, shard_size=args.shard_size, threads=args.threads, seed=args.seed,
            augment=Augment(args.augment, args.augment_seed) if args.augment else None, subset=args.subset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
