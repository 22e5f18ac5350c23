"""Faces per second of several age/gender models, side by side on the same real faces.

    python -m tooling.bench_models models/agegender.onnx models/agegender-cpu.onnx [--batch 1] [--rounds 7]

Each model runs through `realtime.model.AgeGenderModel` (the serving path: its
preprocessing, CPU chunking and calibration included) on the same crops of real faces
from ../shared. The models take turns, one round each in every pass, so that load from
other processes on a shared machine falls on all of them alike; the report gives each
model's median faces/s over the rounds and its ratio to the first model's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from realtime.cli import positive_int


def face_crops(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Real labelled faces, resized whole to the model's input."""
    from export.faces import load_image, load_labels, sample_faces

    faces = sample_faces(load_labels(), (count + 1) // 2, seed=seed)[:count]
    return np.stack([cv2.resize(load_image(f), (size, size), interpolation=cv2.INTER_AREA) for f in faces])


def one_round(model, crops: np.ndarray, batch: int) -> float:
    """Faces per second over all crops, `batch` at a time."""
    started = time.perf_counter()
    for i in range(0, len(crops), batch):
        model.predict(crops[i : i + batch])
    return len(crops) / (time.perf_counter() - started)


def bench(paths: list[Path], faces: int, batch: int, rounds: int, threads: int) -> dict:
    from realtime.model import AgeGenderModel

    models = [AgeGenderModel.create(p, "cpu", threads) for p in paths]
    sizes = {m.input_size for m in models}
    crops = {s: face_crops(faces, s) for s in sizes}
    for m in models:  # warm caches and arenas outside the timing
        one_round(m, crops[m.input_size][: 2 * batch], batch)
    speeds: dict[str, list[float]] = {str(p): [] for p in paths}
    for _ in range(rounds):
        for p, m in zip(paths, models):
            speeds[str(p)].append(one_round(m, crops[m.input_size], batch))
    first = statistics.median(speeds[str(paths[0])])
    rows = {
        name: {"faces_per_s": round(statistics.median(v), 1), "ratio_to_first": round(statistics.median(v) / first, 2),
               "rounds": [round(x, 1) for x in v]}
        for name, v in speeds.items()
    }
    return {"batch": batch, "faces": faces, "threads": threads or os.cpu_count(), "load_average": os.getloadavg(), "models": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.bench_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--faces", type=positive_int, default=64)
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--rounds", type=positive_int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: one per core)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.models if not p.is_file()]
    if missing:
        print(f"error: no such model file: {', '.join(missing)}", file=sys.stderr)
        return 2
    report = bench(args.models, args.faces, args.batch, args.rounds, args.threads)
    for name, row in report["models"].items():
        print(f"{name}: {row['faces_per_s']} faces/s at batch {args.batch} ({row['ratio_to_first']}x the first)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
