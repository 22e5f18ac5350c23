"""Model faces/s of several ONNX files at several batch sizes, side by side.

    git show b5839a7:models/agegender.onnx > cache/agegender-before.onnx
    python docs/scripts/compare_models.py cache/agegender-before.onnx models/agegender.onnx --rounds 3

Every (model, batch) pair is measured `rounds` times, interleaved, so machine noise
hits all alike; the best round of each is printed, with the ratio to the first model
and batch 32's ratio to batch 1. Same measurement as `tooling.bench` (preprocessing,
the run and postprocessing of `AgeGenderModel.predict`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realtime.model import AgeGenderModel
from tooling.bench import measure_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    models = {path: AgeGenderModel.create(path, "cpu") for path in args.models}
    best: dict[tuple[Path, int], float] = {}
    for _ in range(args.rounds):
        for path, model in models.items():
            for batch in batches:
                value = measure_batch(model, batch, args.seconds)["faces_per_s"]
                best[(path, batch)] = max(best.get((path, batch), 0.0), value)
    first = args.models[0]
    for path in args.models:
        cells = "  ".join(
            f"batch {b}: {best[(path, b)]:6.1f} ({best[(path, b)] / best[(first, b)]:.2f}x)" for b in batches
        )
        ratio = f"  batch 32 / batch 1: {best[(path, 32)] / best[(path, 1)]:.2f}x" if 32 in batches and 1 in batches else ""
        print(f"{path.name:28s} {cells}{ratio}")


if __name__ == "__main__":
    main()
