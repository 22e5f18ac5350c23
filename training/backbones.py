"""Feature extractors ("backbones") that turn face crops into bottleneck features.

A backbone takes the crops `training.facecrops.crop_for_model` makes (BGR uint8,
input_size x input_size) and returns one feature row per crop. The heads in
`training.heads` are fitted on these rows, and `export.lightgbm` rebuilds the same
rows inside the fused ONNX graph, so the feature layout is part of the contract:

- the embedding output (`metadata.embedding_output`, 1024-d for faceres), then
- optionally the pretrained heads' outputs as two extra columns: `gender_logit`
  = log(p / (1 - p)) of the pretrained P(male), p clipped to [1e-6, 1 - 1e-6], and
  `age_mean` = the expected age under the pretrained age softmax.

With `flip=True` every feature is the mean of the crop's features and its mirror's
(horizontal-flip test-time augmentation).

The ONNX backbone reads its preprocessing (size, layout, channel order, mean, scale,
crop margin) from the model's own metadata, as the live pipeline does. Other
frameworks (a Keras model, say) only have to implement the `Backbone` protocol.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from realtime.metadata import ModelMetadata
from realtime.model import age_from_softmax, preprocess_crops

P_CLIP = 1e-6
HEAD_FEATURES = ("gender_logit", "age_mean")


@runtime_checkable
class Backbone(Protocol):
    name: str
    input_size: int  # square crop side in pixels
    crop_margin: float  # margin the backbone's crops are made with

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """BGR uint8 crops (N, S, S, 3) to the backbone's input tensor."""
        ...

    def embed(self, crops: np.ndarray) -> "Embedding":
        """Raw outputs for BGR uint8 crops (N, S, S, 3)."""
        ...


@dataclass(frozen=True)
class Embedding:
    """What one backbone pass gives for a batch: the embedding and, where the backbone
    has them, its pretrained heads' outputs."""

    embedding: np.ndarray  # (N, D) float32
    p_male: np.ndarray | None = None  # (N,) float32
    age_probs: np.ndarray | None = None  # (N, K) float32 softmax over ages 0..K-1


def gender_logit(p_male: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p_male, np.float32), np.float32(P_CLIP), np.float32(1 - P_CLIP))
    return np.log(p / (np.float32(1) - p)).astype(np.float32)


def age_expectation(age_probs: np.ndarray) -> np.ndarray:
    return age_from_softmax(np.asarray(age_probs, np.float32))[0]  # the age the live model reports


def feature_names(embedding_dim: int, head_features: bool) -> list[str]:
    names = [f"emb{i}" for i in range(embedding_dim)]
    return names + list(HEAD_FEATURES) if head_features else names


def feature_rows(emb: Embedding, head_features: bool) -> np.ndarray:
    """The feature layout described in the module docstring, float32 (N, D')."""
    parts = [np.asarray(emb.embedding, np.float32)]
    if head_features:
        if emb.p_male is None or emb.age_probs is None:
            raise ValueError("this backbone has no pretrained heads to take features from")
        parts += [gender_logit(emb.p_male)[:, None], age_expectation(emb.age_probs)[:, None]]
    return np.concatenate(parts, axis=1)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class OnnxBackbone:
    """An ONNX model with `ModelMetadata`, whose `embedding_output` is the bottleneck."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"backbone model not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # threads that spin while waiting steal the cores from the detector thread and from
        # other jobs; measured 10-15% faster batches without spinning on a busy 2-core box
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.metadata = ModelMetadata.from_props(props)
        if not self.metadata.embedding_output:
            raise ValueError(f"{self.path} metadata names no embedding_output")
        outputs = {o.name for o in self.session.get_outputs()}
        if self.metadata.embedding_output not in outputs:
            raise ValueError(f"{self.path} has no output {self.metadata.embedding_output!r}")
        self.has_heads = self.metadata.age_kind == "softmax" and {
            self.metadata.gender_output,
            self.metadata.age_output,
        } <= outputs
        self.name = self.metadata.name
        self.input_size = self.metadata.input_size
        self.crop_margin = self.metadata.crop_margin
        self.sha256 = file_sha256(self.path)

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        return preprocess_crops(crops, self.metadata)  # as the live pipeline feeds its model

    def embed(self, crops: np.ndarray) -> Embedding:
        meta = self.metadata
        names = [meta.embedding_output]
        if self.has_heads:
            names += [meta.gender_output, meta.age_output]
        values = self.session.run(names, {meta.input_name: self.preprocess(crops)})
        n = len(crops)
        embedding = np.asarray(values[0], np.float32).reshape(n, -1)
        if not self.has_heads:
            return Embedding(embedding)
        p_male = np.asarray(values[1], np.float32).reshape(n, -1)[:, 0]
        age_probs = np.asarray(values[2], np.float32).reshape(n, -1)
        return Embedding(embedding, p_male, age_probs)


def mirror(crops: np.ndarray) -> np.ndarray:
    """Horizontally flipped crops (N, S, S, 3)."""
    return np.ascontiguousarray(np.asarray(crops)[:, :, ::-1])


def load_backbone(path: str | Path, threads: int = 0) -> Backbone:
    """The backbone stored at `path`; the format follows the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxBackbone(path, threads)
    raise ValueError(f"unsupported backbone format {suffix!r} ({path}): only ONNX models are implemented")


def embed_features(backbone: Backbone, crops: Sequence[np.ndarray] | np.ndarray, head_features: bool, flip: bool) -> np.ndarray:
    """Feature rows for crops, optionally averaged with their mirrors' (flip TTA)."""
    crops = np.asarray(crops)
    rows = feature_rows(backbone.embed(crops), head_features)
    if flip:
        rows = (rows + feature_rows(backbone.embed(mirror(crops)), head_features)) / np.float32(2)
    return rows.astype(np.float32)
