"""Feature files joined: the rows of an augmented extraction added to the clean one, or
the columns of two backbones side by side (stacked).

    python -m training.featuresets --features cache/features/faceres_deep_flip.npz \\
        cache/features/faceres_deep_flip_aug.npz --out cache/features/faceres_deep_flip_plus_aug.npz
    python -m training.featuresets --columns --features cache/features/faceres_small_flip.npz \\
        cache/features/faceres_deep_flip.npz --out cache/features/stacked.npz

`training.bottlenecks --augment` extracts degraded copies of the training faces; the
heads are fitted on the clean rows and the copies together (`training.heads fit` on
the joined file: a copy carries its face's file name, so it lands in that face's
split and cross-validation fold). The files must come from the same backbone with the
same crop and feature layout; only the augmentation may differ. The joined file keeps
every array the inputs share, adds `part` (which input a row came from), and its spec
lists the inputs' specs.

With `--columns` the files must hold the same faces in the same order (extractions over
one labels.csv); each row is the inputs' rows side by side, the last input's columns
last, so its pretrained heads' outputs stay the last two columns that residual heads
start from. The other inputs' head outputs become plain features.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

# what every joined file must agree on for its rows to mean the same thing
SAME = ("backbone_sha256", "flip", "crop_margin", "input_size", "head_features", "feature_dim", "features")


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save(arrays: dict[str, np.ndarray], out: Path) -> None:
    """`out` written whole or not at all (a temporary file renamed over it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)


def join(paths: list[Path], out: Path) -> dict[str, Any]:
    """Write the rows of every file in `paths`, in order, to `out`; a summary."""
    parts = [load(p) for p in paths]
    specs = [json.loads(str(p["spec"])) for p in parts]
    for path, spec in zip(paths[1:], specs[1:]):
        differ = [k for k in SAME if spec.get(k) != specs[0].get(k)]
        if differ:
            raise ValueError(f"{path} differs from {paths[0]} in {', '.join(differ)}: its rows are other features")
    row_keys = [k for k in parts[0] if k not in ("spec", "feature_names") and all(k in p for p in parts)]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in row_keys}
    arrays["part"] = np.concatenate([np.full(len(p["files"]), i, np.int16) for i, p in enumerate(parts)])
    arrays["feature_names"] = parts[0]["feature_names"]
    spec = {**specs[0], "joined": [{"file": str(path), **s} for path, s in zip(paths, specs)]}
    spec.pop("augment", None)
    arrays["spec"] = np.array(json.dumps(spec))
    save(arrays, out)
    return {"out": str(out), "rows": int(len(arrays["files"])), "rows_by_part": [int(len(p["files"])) for p in parts]}


def join_columns(paths: list[Path], out: Path) -> dict[str, Any]:
    """Write the inputs' feature columns side by side to `out`; a summary."""
    parts = [load(p) for p in paths]
    specs = [json.loads(str(p["spec"])) for p in parts]
    for path, part in zip(paths[1:], parts[1:]):
        if not np.array_equal(part["files"], parts[0]["files"]):
            raise ValueError(f"{path} does not hold the same faces in the same order as {paths[0]}")
    last = parts[-1]
    arrays = {k: last[k] for k in ("files", "face_found", "detector_score") if k in last}
    for key in ("features", "features_noflip"):
        if all(key in p for p in parts):
            arrays[key] = np.concatenate([p[key] for p in parts], axis=1).astype(np.float32)
    dim = int(arrays["features"].shape[1])
    names = [f"{i}:{n}" for i, p in enumerate(parts[:-1]) for n in p["feature_names"].tolist()] + last["feature_names"].tolist()
    arrays["feature_names"] = np.array(names)
    spec = {**specs[-1], "feature_dim": dim, "stacked": [{"file": str(path), **s} for path, s in zip(paths, specs)],
            "features": " + ".join(f"{s.get('backbone_name', '?')}: {s.get('features', '')}" for s in specs)}
    arrays["spec"] = np.array(json.dumps(spec))
    save(arrays, out)
    return {"out": str(out), "rows": int(len(arrays["files"])), "feature_dim": dim}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.featuresets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, nargs="+", required=True, help="npz files of training.bottlenecks")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--columns", action="store_true", help="stack the inputs' columns (two backbones) instead of their rows")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.features if not p.is_file()]
    if missing:
        print(f"error: no such features file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.out.resolve() in {p.resolve() for p in args.features}:
        print("error: --out must not be one of the inputs", file=sys.stderr)
        return 2
    try:
        print(json.dumps((join_columns if args.columns else join)(args.features, args.out)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
