"""The contract between a model file and the code that serves it.

Every ONNX model that `export/` writes carries these fields in its `metadata_props`,
so that run_camera.py can run any of them with `--model` without knowing how it was
made: the input size, layout, channel order and normalisation, and what each output
means. Values are strings in ONNX; lists and dicts are stored as JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, Literal

from .calibration import GenderCalibration

AgeKind = Literal["softmax", "regression"]
METADATA_VERSION = "1"
# years: every age the product outputs lies in this range. A regressor extrapolates (a
# Huber head predicted -1.07 for a young face), so exports clip their age output and the
# model runner clips again, for models exported before the clip existed
AGE_RANGE: tuple[float, float] = (0.0, 100.0)
# crop sides a face model may declare: a face needs some pixels, and one crop of 20000 px
# would be 4.8 GB before the model even ran (the metadata is read before anything is
# allocated, so a corrupt or hostile file is refused, not obeyed)
INPUT_SIZE_RANGE: tuple[int, int] = (16, 1024)
# the detector every model was trained with before the metadata named one: crops were cut
# around MediaPipe's full-range BlazeFace boxes and rolled level by its first two keypoints
BLAZEFACE_FULL = "blazeface-full"
BLAZEFACE_KEYPOINTS: tuple[str, ...] = (
    "right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"
)


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    input_name: str
    input_size: int  # square side in pixels
    layout: Literal["NHWC", "NCHW"]
    channel_order: Literal["BGR", "RGB"]
    # pixel' = (pixel - mean[c]) * scale, pixel in 0..255, mean in the model's channel order
    mean: tuple[float, float, float]
    scale: float
    gender_output: str  # probability that the face is male, shape (N, 1) or (N,)
    age_output: str
    # softmax: (N, K) probabilities over ages 0..K-1, estimate = expected value;
    # regression: (N, 1) or (N,) years.
    age_kind: AgeKind
    # margin added on each side of the detector box, as a fraction of the box side
    crop_margin: float = 0.4
    # the detector whose boxes and keypoints the training crops were cut from, and the
    # names of its keypoints in order; the analyzer warns when it runs another
    detector: str = BLAZEFACE_FULL
    keypoint_layout: tuple[str, ...] = BLAZEFACE_KEYPOINTS
    embedding_output: str = ""
    license: str = ""
    provenance: str = ""
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    # maps the gender output to calibrated P(male) by estimated age (realtime.calibration);
    # empty: the output is taken as it is
    gender_calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str:
        """Why these values cannot describe a servable model; empty when they can."""
        low, high = INPUT_SIZE_RANGE
        size = self.input_size
        if not isinstance(size, int) or isinstance(size, bool) or not low <= size <= high:
            return f"input_size {size!r} is not a whole number of pixels in {low}..{high}"
        if self.layout not in ("NHWC", "NCHW"):
            return f"layout {self.layout!r} is neither NHWC nor NCHW"
        if self.channel_order not in ("BGR", "RGB"):
            return f"channel_order {self.channel_order!r} is neither BGR nor RGB (3 colour channels)"
        if self.age_kind not in ("softmax", "regression"):
            return f"age_kind {self.age_kind!r} is neither softmax nor regression"
        if not _finite_numbers(self.mean, 3):
            return f"mean {self.mean!r} is not 3 finite numbers, one per colour channel"
        if not _finite_numbers((self.scale,), 1) or self.scale == 0:
            return f"scale {self.scale!r} is not a finite non-zero number"
        if not _finite_numbers((self.crop_margin,), 1) or not 0 <= self.crop_margin <= 2:
            return f"crop_margin {self.crop_margin!r} is not a number in 0..2"
        if not isinstance(self.keypoint_layout, tuple) or not all(isinstance(k, str) for k in self.keypoint_layout):
            return f"keypoint_layout {self.keypoint_layout!r} is not a tuple of keypoint names"
        if self.gender_calibration:
            try:
                self.calibration()
            except ValueError as exc:
                return str(exc)
        return ""

    def calibration(self) -> GenderCalibration | None:
        """The gender calibration the model carries, or None."""
        if not self.gender_calibration:
            return None
        if not isinstance(self.gender_calibration, dict):
            raise ValueError("gender_calibration is not a JSON object")
        return GenderCalibration.from_dict(self.gender_calibration)

    def to_props(self) -> dict[str, str]:
        props: dict[str, str] = {"metadata_version": METADATA_VERSION}
        for key, value in asdict(self).items():
            props[key] = value if isinstance(value, str) else json.dumps(value)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMetadata":
        fields = cls.__dataclass_fields__
        required = [k for k, f in fields.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in props]
        if missing:
            raise ValueError(f"model metadata lacks {', '.join(sorted(missing))}")
        values: dict[str, Any] = {}
        for key, f in fields.items():
            if key not in props:
                continue
            raw = props[key]
            # annotations are strings here (from __future__); text-typed fields stay as stored
            is_text = f.type in ("str", "AgeKind") or str(f.type).startswith("Literal")
            values[key] = raw if is_text else json.loads(raw)
        mean = values["mean"]
        if _finite_numbers(mean, 3):
            values["mean"] = tuple(float(m) for m in mean)
        if isinstance(values.get("keypoint_layout"), list):
            values["keypoint_layout"] = tuple(values["keypoint_layout"])
        return cls(**values)


def _finite_numbers(values: Any, count: int) -> bool:
    try:
        items = list(values)
    except TypeError:
        return False
    return len(items) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items
    )
