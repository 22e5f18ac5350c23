"""The contract between a model file and the code that serves it.

Every ONNX model that `export/` writes carries these fields in its `metadata_props`,
so that run_camera.py can run any of them with `--model` without knowing how it was
made: the input size, layout, channel order and normalisation, and what each output
means. Values are strings in ONNX; lists and dicts are stored as JSON.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, Literal

AgeKind = Literal["softmax", "regression"]
METADATA_VERSION = "1"


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
    embedding_output: str = ""
    license: str = ""
    provenance: str = ""
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

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
        values["mean"] = tuple(float(m) for m in values["mean"])
        return cls(**values)
