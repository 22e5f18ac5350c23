"""Outputs: the annotated video, per-frame and per-person JSON lines, the run summary.

Sinks are context managers opened before the first frame, so that an unwritable path
fails at once rather than after an hour of processing. JSON lines are flushed as they
are written, so a crash keeps every line before it; the summary is written to a
temporary file and renamed, so it is either complete or absent, never half written.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from .errors import OutputError

FOURCC_FOR_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def check_writable(path: Path) -> Path:
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder does not exist: {parent}")
    if path.is_dir():
        raise OutputError(f"output path is a folder: {path}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"output path is not writable: {path}")
    return path


def check_video_path(path: Path) -> Path:
    path = check_writable(path)
    if path.suffix.lower() not in FOURCC_FOR_SUFFIX:
        raise OutputError(f"unsupported video format {path.suffix!r}: use one of {', '.join(FOURCC_FOR_SUFFIX)}")
    return path


class VideoSink:
    """Annotated frames to a video file at the source's frame rate and size."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = check_video_path(Path(path))
        fourcc = FOURCC_FOR_SUFFIX[self.path.suffix.lower()]
        self.size = size
        self.frames = 0
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
        if not self._writer.isOpened():
            raise OutputError(f"cannot write video: {self.path}")

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            # folders of images may mix sizes; a video cannot
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        # release writes the index; without it an mp4 does not play
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and infinity to null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonLinesSink:
    """One JSON object per line, flushed per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = check_writable(Path(path))
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}") from None
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(_clean(record), separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk, a vanished mount, a device file
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.lines += 1

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass  # the write that failed already said why

    def __enter__(self) -> "JsonLinesSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(data), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
