"""The age and gender model: one onnxruntime session, batched, described by its metadata.

The model file says how to feed it (input size, channel order, normalisation) and what
its outputs mean (see `realtime.metadata`), so any model `export/` writes runs here.
Metadata that no face model could have (a 20000 px input, NaN normalisation) is refused
before anything is allocated, and a model that loads but fails on a test input is
refused at load, naming the file. Ages are clipped to `AGE_RANGE` whatever the model
gives, so a regressor's -1 year never reaches the overlay, events or kiosk.

Execution providers: `auto` tries TensorRT, then CUDA, then the CPU, and the providers
the session really uses are reported, because onnxruntime silently falls back to the CPU
when a GPU provider fails to load; an explicitly requested GPU provider that does not
load is an error instead.

The session's worker threads sleep between runs instead of spin-waiting: the model runs
on a few frames in each second, and spinning threads took the cores from the decoder
and the detector in between (measured on the 2-core development machine, 480p clip with
4 people: 32 -> 47 fps, 24.6 -> 18.1 CPU ms/frame). On that CPU a batch of 32 is no
faster per face than one (about 66 faces/s either way, docs/benchmarks.md: batch 1
already keeps both cores busy), so batching pays on GPUs; the scheduler keeps CPU
batches small by inferring only the faces that need it.

On the CPU a batch also runs in chunks of at most CPU_CHUNK faces. onnxruntime's memory
arena grows to the largest batch it has seen and never shrinks (about 10 MB per face
here), so a kiosk's memory stepped up whenever a crowd brought a new largest batch,
hours into a run; chunks of 4 are as fast per face as any batch on these cores, and the
arena is grown to that size once, at load, so resident memory stays flat (a one-hour
kiosk soak: README).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

import numpy as np

from .errors import ModelError, UserError
from .calibration import calibrate_p_male
from .metadata import AGE_RANGE, ModelMetadata

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
PROVIDER_FOR: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


# TensorRT builds an engine per input shape unless told the range of batch sizes; the
# scheduler sends at most 64 faces a frame (ScheduleOptions.max_per_frame)
TRT_MAX_BATCH = 64
CPU_CHUNK = 4  # see the module docstring
TRT_CACHE_DIR = Path(os.environ.get("AGEGENDER_TRT_CACHE", Path.home() / ".cache" / "agegender" / "tensorrt"))
ONNX_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class Predictions:
    """One row per face."""

    age: np.ndarray  # years, float32 (N,)
    age_std: np.ndarray  # spread of the model's own age distribution; 0 for regressors
    p_male: np.ndarray  # probability of the "male" label, float32 (N,)

    def __len__(self) -> int:
        return len(self.age)

    def part(self, start: int, stop: int) -> "Predictions":
        """Rows start..stop: one stream's faces out of a batch shared by several."""
        return Predictions(self.age[start:stop], self.age_std[start:stop], self.p_male[start:stop])


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


class InputSpec(Protocol):
    """How a network wants its input: what `ModelMetadata` says, or a training spec."""

    channel_order: str  # "BGR" | "RGB"
    mean: Sequence[float]
    scale: float
    layout: str  # "NHWC" | "NCHW"


def preprocess_crops(crops: Sequence[np.ndarray] | np.ndarray, meta: InputSpec, dtype: Any = np.float32) -> np.ndarray:
    """BGR uint8 crops (N, S, S, 3) to the input tensor `meta` describes (channel order,
    normalisation, layout). Training and export feed their models through this too."""
    batch = np.asarray(crops, dtype=np.float32)
    if meta.channel_order == "RGB":
        batch = batch[..., ::-1]
    batch = (batch - np.asarray(meta.mean, np.float32)) * np.float32(meta.scale)
    if meta.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=dtype)


def decode_outputs(age_raw: np.ndarray, gender_raw: np.ndarray, meta: ModelMetadata) -> Predictions:
    """A batch's raw age and gender outputs to what the product shows, one row per face."""
    n = len(gender_raw)
    p_male = np.asarray(gender_raw, np.float32).reshape(n, -1)[:, 0]
    if meta.age_kind == "softmax":
        age, age_std = age_from_softmax(np.asarray(age_raw).reshape(n, -1))
    else:
        age = np.asarray(age_raw, np.float32).reshape(n, -1)[:, 0]
        age_std = np.zeros_like(age)
    # every model, also one exported before exports clipped their age output
    age = np.clip(age, *AGE_RANGE).astype(np.float32)
    return Predictions(age=age, age_std=age_std, p_male=calibrate_p_male(p_male, age, meta.calibration()))


def session_options(ort: Any, threads: int) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the default, stated
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see the module docstring
    return options


def tensorrt_options(metadata: ModelMetadata) -> dict[str, str]:
    """TensorRT provider options (written for GPU machines; the development machine has none)."""
    size = metadata.input_size
    shape = f"{size}x{size}x3" if metadata.layout == "NHWC" else f"3x{size}x{size}"
    TRT_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return {
        # one engine for every batch size from 1 to the scheduler's cap, built once and cached
        "trt_profile_min_shapes": f"{metadata.input_name}:1x{shape}",
        "trt_profile_opt_shapes": f"{metadata.input_name}:8x{shape}",
        "trt_profile_max_shapes": f"{metadata.input_name}:{TRT_MAX_BATCH}x{shape}",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(TRT_CACHE_DIR),
        "trt_timing_cache_enable": "True",
    }


def open_session(ort: Any, path: Path, providers: list[str], options: Any) -> Any:
    if PROVIDER_FOR["tensorrt"] in providers:
        # TensorRT's shape profile needs the input's name and size, which the metadata holds
        probe = ort.InferenceSession(str(path), providers=[PROVIDER_FOR["cpu"]])
        trt = (PROVIDER_FOR["tensorrt"], tensorrt_options(read_session_metadata(probe, path)))
        providers = [trt if p == trt[0] else p for p in providers]  # type: ignore[misc]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class AgeGenderModel:
    def __init__(self, session: object, metadata: ModelMetadata, path: Path) -> None:
        self.session = session
        self.metadata = metadata
        self.path = path
        inputs = {i.name: i.type for i in session.get_inputs()}  # type: ignore[attr-defined]
        # fp16 models usually keep float32 inputs; one exported without them takes float16
        self._input_dtype = ONNX_TO_NUMPY.get(inputs.get(metadata.input_name, ""), np.float32)
        on_cpu = self.providers[:1] == [PROVIDER_FOR["cpu"]]
        self.chunk: int | None = CPU_CHUNK if on_cpu else None
        import onnxruntime as ort

        # a failing run raises, and the exception is reported in one line; onnxruntime
        # would also log it to stderr, in several lines of C++ text
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4

    @classmethod
    def create(cls, path: str | Path, device: str = "auto", threads: int = 0) -> "AgeGenderModel":
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        providers = requested_providers(device, ort.get_available_providers())
        try:
            session = open_session(ort, path, providers, session_options(ort, threads))
        except Exception as exc:
            raise ModelError(f"cannot load model {path}: {first_line(exc)}") from None
        metadata = read_session_metadata(session, path)
        check_io(session, metadata, path)
        if device in ("cuda", "tensorrt") and PROVIDER_FOR[device] not in session.get_providers():
            raise UserError(f"device {device!r} failed to initialise (onnxruntime fell back to {session.get_providers()})")
        model = cls(session, metadata, path)
        try:
            model.warm_up()
        except Exception as exc:  # onnxruntime's errors are long, multi-line C++ texts
            raise ModelError(f"model {path} loads but fails on a test input: {first_line(exc)}") from None
        return model

    def warm_up(self) -> None:
        """Run the model once now, so that a model that loads but cannot run fails at start-up
        instead of at the first face; on the CPU also grow the arena to its final size now,
        not at the first crowd (module docstring).

        onnxruntime plans memory per input shape on a shape's first run and allocates the
        plan on its second, so every chunk size runs twice (about 0.3 s on 2 cores). Only
        the CPU runs in chunks; elsewhere one face is run once.
        """
        zeros = np.zeros((self.chunk or 1, self.input_size, self.input_size, 3), np.uint8)
        for _ in range(2 if self.chunk else 1):
            for size in range(len(zeros), 0, -1):
                self.predict(zeros[:size])

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())  # type: ignore[attr-defined]

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    def preprocess(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """BGR uint8 crops (N, S, S, 3) to the model's input tensor."""
        return preprocess_crops(crops, self.metadata, self._input_dtype)

    def predict(self, crops: Sequence[np.ndarray] | np.ndarray) -> Predictions:
        """One batched run over all the crops (N, S, S, 3) BGR uint8."""
        if len(crops) == 0:
            empty = np.zeros((0,), np.float32)
            return Predictions(empty, empty, empty)
        age_raw, gender_raw = self._run(crops)
        return decode_outputs(age_raw, gender_raw, self.metadata)

    def _run(self, crops: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw age and gender outputs, one run per chunk of the batch."""
        meta = self.metadata
        outputs = [meta.age_output, meta.gender_output]
        step = self.chunk or len(crops)
        parts = [
            self.session.run(outputs, {meta.input_name: self.preprocess(crops[i : i + step])}, self._run_options)  # type: ignore[attr-defined]
            for i in range(0, len(crops), step)
        ]
        return np.concatenate([np.asarray(p[0]) for p in parts]), np.concatenate([np.asarray(p[1]) for p in parts])


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


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
