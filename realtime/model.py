"""The age and gender model: one onnxruntime session, batched, described by its metadata.

The model file says how to feed it (input size, channel order, normalisation) and what
its outputs mean (see `realtime.metadata`), so any model `export/` writes runs here.

Execution providers: `auto` tries TensorRT, then CUDA, then the CPU, and the providers
the session really uses are reported, because onnxruntime silently falls back to the CPU
when a GPU provider fails to load; an explicitly requested GPU provider that does not
load is an error instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .errors import ModelError, UserError
from .metadata import ModelMetadata

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
PROVIDER_FOR: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class Predictions:
    """One row per face."""

    age: np.ndarray  # years, float32 (N,)
    age_std: np.ndarray  # spread of the model's own age distribution; 0 for regressors
    p_male: np.ndarray  # probability of the "male" label, float32 (N,)

    def __len__(self) -> int:
        return len(self.age)


def requested_providers(device: str, available: Sequence[str]) -> list[str]:
    """The provider list to hand to onnxruntime for a `--device` value."""
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        chain = ["tensorrt", "cuda", "cpu"]
        return [PROVIDER_FOR[d] for d in chain if PROVIDER_FOR[d] in available]
    wanted = PROVIDER_FOR[device]
    if wanted not in available:
        hint = " (install the project's `gpu` extra: onnxruntime-gpu)" if device != "cpu" else ""
        raise UserError(
            f"device {device!r} is not available; this onnxruntime offers {', '.join(available)}{hint}"
        )
    # CUDA backs TensorRT for the operators TensorRT cannot take
    fallbacks = {"tensorrt": ["cuda", "cpu"], "cuda": ["cpu"], "cpu": []}[device]
    return [wanted] + [PROVIDER_FOR[d] for d in fallbacks if PROVIDER_FOR[d] in available]


def age_from_softmax(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected age and its standard deviation under the model's age distribution."""
    ages = np.arange(probs.shape[1], dtype=np.float64)
    p = probs.astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    mean = p @ ages
    var = p @ (ages**2) - mean**2
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 0.0)).astype(np.float32)


class AgeGenderModel:
    def __init__(self, session: object, metadata: ModelMetadata, path: Path) -> None:
        self.session = session
        self.metadata = metadata
        self.path = path

    @classmethod
    def create(cls, path: str | Path, device: str = "auto", threads: int = 0) -> "AgeGenderModel":
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        providers = requested_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load model {path}: {first[:200]}") from None
        metadata = read_session_metadata(session, path)
        check_io(session, metadata, path)
        if device in ("cuda", "tensorrt") and PROVIDER_FOR[device] not in session.get_providers():
            raise UserError(f"device {device!r} failed to initialise (onnxruntime fell back to {session.get_providers()})")
        return cls(session, metadata, path)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())  # type: ignore[attr-defined]

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    def preprocess(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """BGR uint8 crops (N, S, S, 3) to the model's input tensor."""
        meta = self.metadata
        batch = np.asarray(crops, dtype=np.float32)
        if meta.channel_order == "RGB":
            batch = batch[..., ::-1]
        batch = (batch - np.asarray(meta.mean, np.float32)) * np.float32(meta.scale)
        if meta.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)

    def predict(self, crops: Sequence[np.ndarray] | np.ndarray) -> Predictions:
        """One batched run over all the crops (N, S, S, 3) BGR uint8."""
        if len(crops) == 0:
            empty = np.zeros((0,), np.float32)
            return Predictions(empty, empty, empty)
        meta = self.metadata
        outputs = [meta.age_output, meta.gender_output]
        age_raw, gender_raw = self.session.run(outputs, {meta.input_name: self.preprocess(crops)})  # type: ignore[attr-defined]
        p_male = np.asarray(gender_raw, np.float32).reshape(len(crops), -1)[:, 0]
        if meta.age_kind == "softmax":
            age, age_std = age_from_softmax(np.asarray(age_raw).reshape(len(crops), -1))
        else:
            age = np.asarray(age_raw, np.float32).reshape(len(crops), -1)[:, 0]
            age_std = np.zeros_like(age)
        return Predictions(age=age, age_std=age_std, p_male=p_male)


def read_session_metadata(session: object, path: Path) -> ModelMetadata:
    props = session.get_modelmeta().custom_metadata_map  # type: ignore[attr-defined]
    try:
        return ModelMetadata.from_props(dict(props))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model {path} has no usable age/gender metadata ({exc}); export it with export/") from None


def check_io(session: object, meta: ModelMetadata, path: Path) -> None:
    """Refuse a model whose real inputs and outputs contradict its metadata."""
    inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    outputs = {o.name for o in session.get_outputs()}  # type: ignore[attr-defined]
    if meta.input_name not in inputs:
        raise ModelError(f"model {path} has no input named {meta.input_name!r}")
    shape = inputs[meta.input_name].shape
    expected = [meta.input_size, meta.input_size, 3] if meta.layout == "NHWC" else [3, meta.input_size, meta.input_size]
    fixed = [d if isinstance(d, int) else None for d in shape[1:]]
    if len(shape) != 4 or any(f is not None and f != e for f, e in zip(fixed, expected)):
        raise ModelError(f"model {path} input shape {shape} does not match its metadata {['N'] + expected}")
    for name in (meta.age_output, meta.gender_output):
        if name not in outputs:
            raise ModelError(f"model {path} has no output named {name!r}")
