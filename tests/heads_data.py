"""Real bottleneck features for the heads and export tests, computed once per test run.

A few hundred labelled faces from ../shared go through `python -m training.bottlenecks`
(the real detector, crop and backbone, with --flip so both feature variants exist);
test_heads.py and test_export_lightgbm.py share the result through `functools.cache`,
so a pytest run that collects both computes the features once.
"""

from __future__ import annotations

import atexit
import csv
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.paths import BACKBONE_MODEL, ROOT, SHARED_DATA

FACES = SHARED_DATA / "faces"
PER_SOURCE = 240


def backbone_path() -> Path | None:
    return BACKBONE_MODEL if BACKBONE_MODEL.is_file() else None


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


@dataclass(frozen=True)
class FeatureSet:
    root: Path  # temporary folder, removed at exit
    labels: Path  # labels.csv of the sample (absolute image paths)
    train_labels: Path  # only the train split's rows of `labels`
    shuffled_labels: Path  # the train split's rows with genders and ages permuted within each source
    features: Path  # npz from training.bottlenecks --flip
    backbone: Path


def sample_rows(per_source: int, seed: int = 11) -> list[dict[str, str]]:
    with open(FACES / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    picked = []
    for source in ("wiki", "utkface"):
        pool = [r for r in rows if r["source"] == source]
        for i in sorted(rng.choice(len(pool), size=per_source, replace=False)):
            picked.append({**pool[i], "file": str(FACES / pool[i]["file"])})
    return picked


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@functools.cache
def feature_set() -> FeatureSet:
    backbone = backbone_path()
    if backbone is None:
        raise FileNotFoundError(f"no backbone model at {BACKBONE_MODEL}")
    root = Path(tempfile.mkdtemp(prefix="heads-test-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    rows = sample_rows(PER_SOURCE)
    labels = root / "labels.csv"
    write_rows(labels, rows)
    # the control: the train split's images with their labels permuted within each source
    from training.labels import load_labels
    from training.splits import validation_mask

    val = validation_mask(load_labels(labels))
    train_rows = [r for r, v in zip(rows, val) if not v]
    train_labels = root / "train.csv"
    write_rows(train_labels, train_rows)
    rng = np.random.default_rng(5)
    shuffled = [dict(r) for r in train_rows]
    for source in ("wiki", "utkface"):
        idx = [i for i, r in enumerate(train_rows) if r["source"] == source]
        for i, j in zip(idx, rng.permutation(idx)):
            shuffled[i]["gender"], shuffled[i]["age"] = train_rows[j]["gender"], train_rows[j]["age"]
    shuffled_labels = root / "shuffled.csv"
    write_rows(shuffled_labels, shuffled)
    features = root / "features.npz"
    done = run_module(
        "training.bottlenecks", "--backbone", str(backbone), "--labels", str(labels), "--out", str(features), "--flip",
        "--shard-size", "200",
    )
    if done.returncode != 0:
        raise RuntimeError(f"training.bottlenecks failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return FeatureSet(root, labels, train_labels, shuffled_labels, features, backbone)


@functools.cache
def fitted_heads(key: str = "features") -> Path:
    """Heads fitted by the CLI on the train split of the sample (small search budget)."""
    data = feature_set()
    out = data.root / f"heads-{key}"
    done = run_module(
        "training.heads", "fit", "--features", str(data.features), "--labels", str(data.labels), "--out", str(out),
        "--split", "--trials", "3", "--timeout", "120", "--folds", "3", "--features-key", key,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training.heads fit failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return out
