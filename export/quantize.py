"""An int8 copy of an exported model, for CPUs: its convolutions quantized statically.

    python -m export.quantize --model models/agegender-cpu-fp32.onnx --out models/agegender-cpu.onnx

The backbone's convolutions are nearly all of a face's cost. ONNX Runtime's static
quantization (`onnxruntime.quantization.quantize_static`, QDQ format) stores their
weights as int8, one scale per output channel, and their activations as uint8 with
ranges measured on real face crops (the calibration faces, taken from the training
split so the validation faces stay unseen), so on a CPU with integer dot-product
instructions (AVX-512 VNNI, AVX-VNNI, ARM dot-product) they run in integer
arithmetic. Only `Conv` is quantized: the heads (LightGBM trees) and the few
elementwise nodes stay float32, as does every input and output, so the metadata and
the serving code are unchanged.

`--input-size` also makes the copy take smaller crops (the backbone is convolutional up
to its global pooling), which cuts the cost with the pixel count. Heads fitted on the
float32 backbone's features do not fit the copy's: extract features with the copy
(`training.bottlenecks --backbone`) and fit heads on those, then fuse them with it.

Quantization moves the outputs a little; the command prints the largest and mean
change of age and P(male) on held-out faces and how many gender decisions differ
(against the float32 model at the same input size), and records it in the metadata. The accuracy of the copy is what
`training.evaluate` measures end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.model import preprocess_crops
from training.labels import DEFAULT_LABELS

QUANTIZED_OPS = ["Conv"]
NOTE = "convolutions quantized to int8 (onnxruntime static QDQ, per-channel weights; export.quantize)"


# activation ranges from the 0.1 and 99.9 percentiles rather than the extremes: on real
# faces the backbone's embedding kept a cosine similarity of 0.981 on average to float32's
# (worst face 0.959) against 0.938 (0.876) with min-max ranges, at the same speed
CALIBRATION_PERCENTILE = 99.9


@dataclass(frozen=True)
class QuantizeOptions:
    model: Path  # a float32 model written by export/
    out: Path
    labels: Path = DEFAULT_LABELS
    calibration_faces: int = 128  # training-split faces whose activations set the ranges
    check_faces: int = 128  # validation faces the outputs are compared on
    seed: int = 0
    input_size: int | None = None  # also run the copy at this crop side (a convolutional backbone)


def face_files(labels_path: Path, validation: bool, count: int, seed: int) -> list[str]:
    """`count` files of the training or validation split, drawn by seed."""
    from training.labels import load_labels
    from training.splits import validation_mask

    labels = load_labels(labels_path)
    rows = np.flatnonzero(validation_mask(labels) == validation)
    chosen = np.random.default_rng(seed).choice(rows, size=min(count, len(rows)), replace=False)
    return [str(labels.file[i]) for i in sorted(chosen)]


def resized_input(source: Path, out: Path, size: int) -> None:
    """A copy of a convolutional backbone that takes size x size crops: its input's spatial
    sides set, the intermediate shapes dropped for shape inference to redo. Cost per face
    falls with the pixel count (192 px: 0.73x of 224's)."""
    import onnx

    model = onnx.load(str(source))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    spatial = (1, 2) if dims[3].dim_value == 3 else (2, 3)  # NHWC or NCHW
    for i in spatial:
        dims[i].dim_value = size
    del model.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(model), str(out))


def quantize_model(source: Path, out: Path, crops: np.ndarray, meta: Any, batch: int = 8) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter([{meta.input_name: preprocess_crops(crops[i : i + batch], meta)} for i in range(0, len(crops), batch)])

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches to onnxruntime's calibrator."""

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # the graph's shapes are plain onnx shape inference's to find (no sympy needed)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS,
            calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
        )


def compare(reference: Path, quantized: Path, crops: np.ndarray) -> dict[str, Any]:
    """How far the quantized model's outputs move from the reference's on the same crops."""
    from realtime.model import AgeGenderModel

    a = AgeGenderModel.create(reference, "cpu").predict(crops)
    b = AgeGenderModel.create(quantized, "cpu").predict(crops)
    dp, dage = np.abs(a.p_male - b.p_male), np.abs(a.age - b.age)
    return {
        "faces": int(len(crops)),
        "max_abs_p_male": round(float(dp.max()), 4),
        "mean_abs_p_male": round(float(dp.mean()), 4),
        "max_abs_age": round(float(dage.max()), 3),
        "mean_abs_age": round(float(dage.mean()), 3),
        "gender_decisions_differ": int(((a.p_male >= 0.5) != (b.p_male >= 0.5)).sum()),
    }


def quantize(options: QuantizeOptions) -> dict[str, Any]:
    from export.lightgbm import make_crops
    from export.metadata import read_metadata, write_metadata

    meta = read_metadata(options.model)
    size, margin = options.input_size or meta.input_size, meta.crop_margin
    calibration = make_crops(options.labels, face_files(options.labels, False, options.calibration_faces, options.seed), size, margin)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = options.out.with_name(f".{options.out.name}.tmp")
    resized = options.out.with_name(f".{options.out.name}.resized.onnx")
    try:
        source, name, note = options.model, f"{meta.name}-int8", NOTE
        if options.input_size and options.input_size != meta.input_size:
            resized_input(options.model, resized, options.input_size)
            meta = dataclasses.replace(meta, input_size=options.input_size)
            write_metadata(resized, meta)
            source, name = resized, f"{meta.name}-{options.input_size}-int8"
            note = f"input {options.input_size} px (export.quantize); {NOTE}"
        quantize_model(source, tmp, calibration, meta)
        checks = make_crops(options.labels, face_files(options.labels, True, options.check_faces, options.seed), size, margin)
        change = compare(source, tmp, checks)
        quantized_meta = dataclasses.replace(
            meta,
            name=name,
            provenance=f"{meta.provenance}; {note}, ranges from {len(calibration)} training-split faces",
            metrics={**meta.metrics, "int8_vs_float32": change},
        )
        write_metadata(tmp, quantized_meta)
        tmp.replace(options.out)
    finally:
        tmp.unlink(missing_ok=True)
        resized.unlink(missing_ok=True)
    return {"out": str(options.out), "bytes": options.out.stat().st_size, "change": change}


def main(argv: list[str] | None = None) -> int:
    defaults = QuantizeOptions
    parser = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="float32 ONNX model written by export/")
    parser.add_argument("--out", type=Path, required=True, help="the int8 model to write")
    parser.add_argument("--labels", type=Path, default=defaults.labels)
    parser.add_argument("--calibration-faces", type=int, default=defaults.calibration_faces)
    parser.add_argument("--check-faces", type=int, default=defaults.check_faces)
    parser.add_argument("--input-size", type=int, default=None, help="also make the copy take crops of this side (a convolutional backbone)")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: no such model file: {args.model}", file=sys.stderr)
        return 2
    if args.out.resolve() == args.model.resolve():
        print("error: --out must differ from --model", file=sys.stderr)
        return 2
    print(quantize(QuantizeOptions(args.model, args.out, args.labels, args.calibration_faces, args.check_faces,
                                   input_size=args.input_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
