"""Read and write `realtime.metadata.ModelMetadata` in an ONNX model's metadata_props.

Every exporter (TFJS, LightGBM, Keras, ...) goes through these two functions so that the
serving side only ever has to understand one contract. The dataclass itself lives in
`realtime.metadata` because the runtime must read it without the export dependencies.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from realtime.metadata import ModelMetadata

ModelLike = onnx.ModelProto | str | Path


def write_metadata(model: ModelLike, meta: ModelMetadata) -> onnx.ModelProto:
    """Store `meta` in the model's metadata_props and return the model.

    Given a path, the file is rewritten in place. Keys that `meta` sets replace earlier
    values; any other props already there (a converter's own notes) are kept. `meta`'s
    `detector` and `keypoint_layout` default to the full-range BlazeFace that `training/`
    cuts its crops with; an exporter whose crops came from another detector sets them,
    so that the analyzer can warn when it runs a detector unlike the training one.
    """
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    props = meta.to_props()
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if isinstance(model, (str, Path)):
        onnx.save(proto, str(model))
    return proto


def read_props(model: ModelLike) -> dict[str, str]:
    """All metadata_props of a model as a dict (weights are not needed, so not loaded)."""
    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    return {p.key: p.value for p in proto.metadata_props}


def read_metadata(model: ModelLike) -> ModelMetadata:
    """The model's ModelMetadata; raises ValueError if required fields are missing."""
    return ModelMetadata.from_props(read_props(model))
