"""The files a run writes, at the lowest level: a video, JSON lines, one whole JSON file.

Writers are opened before the first frame, so that an unwritable path fails at once
rather than after an hour of processing. JSON lines are flushed as they are written, so
a crash keeps every line before it; the summary is replaced atomically (realtime.files),
so it is either complete or absent, never half written. Sinks (the rest of this package)
decide what goes into these files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from ..errors import OutputError
from ..files import free_bytes, refuse_clashes, write_text_atomic

REMOVED = "the file was removed while it was being written"
# below this much free space a failed write is put down to a full disk
FULL_BELOW_BYTES = 1 << 20
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


def check_outputs(
    source: str | Sequence[str],
    outputs: Mapping[str, Path | None],
    inputs: Mapping[str, Path | None],
    video_option: str = "--output",
) -> None:
    """Every output is writable and none is an input or another output, before anything opens.

    `outputs` and `inputs` map option names (for messages; a stream's outputs may be
    labelled "--output (door)") to paths; each file or folder `source` counts as an input
    too; the outputs labelled `video_option` are videos.
    """
    from ..sources import classify

    for name, path in outputs.items():
        if path is None:
            continue
        check = check_video_path if name.split(" ")[0] == video_option else check_writable
        check(path)
    all_inputs = dict(inputs)
    sources = [source] if isinstance(source, str) else list(source)
    for spec in sources:
        if classify(spec) in ("file", "folder"):
            all_inputs["--source" if len(sources) == 1 else f"--source {spec}"] = Path(spec)
    refuse_clashes(outputs, all_inputs)


def check_video_path(path: Path) -> Path:
    path = check_writable(path)
    if path.suffix.lower() not in FOURCC_FOR_SUFFIX:
        raise OutputError(f"unsupported video format {path.suffix!r}: use one of {', '.join(FOURCC_FOR_SUFFIX)}")
    return path


class VideoFile:
    """Annotated frames to a video file at the source's frame rate and size.

    OpenCV's writer reports a failed frame only through `write`'s return value and
    otherwise carries on, leaving an unplayable file behind: every failure (a full disk,
    the file removed under us, an encoder error) is turned into an OutputError here, and
    the finished file is read back to prove it plays.
    """

    # how often to check that the file is still linked into its folder
    WATCH_EVERY = 25

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = check_video_path(Path(path))
        fourcc = FOURCC_FOR_SUFFIX[self.path.suffix.lower()]
        self.size = size
        self.frames = 0
        self.failed = False
        self._writer: cv2.VideoWriter | None = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
        if not self._writer.isOpened():
            self._writer = None
            if min(size) < 2:
                raise OutputError(f"cannot encode {size[0]}x{size[1]} frames as {self.path.suffix}: the source's frames are too small for this format (try .avi)")
            raise OutputError(f"cannot write video: {self.path}")
        try:
            self._watch: int | None = os.open(self.path, os.O_RDONLY)
        except OSError:
            self._watch = None

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            raise OutputError(f"video already closed: {self.path}")
        if (frame.shape[1], frame.shape[0]) != self.size:
            # folders of images may mix sizes; a video cannot
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        if self._writer.write(frame) is False:
            self.failed = True
            raise OutputError(f"cannot write video {self.path}: {self._why()}")
        self.frames += 1
        if self.frames % self.WATCH_EVERY == 0 and self._removed():
            self.failed = True
            raise OutputError(f"cannot write video {self.path}: {REMOVED}")

    def _removed(self) -> bool:
        if self._watch is None:
            return False
        try:
            return os.fstat(self._watch).st_nlink == 0
        except OSError:
            return True

    def _why(self) -> str:
        if self._removed():
            return REMOVED
        return "the disk is full" if self._disk_full() else "the encoder failed"

    def _disk_full(self) -> bool:
        free = free_bytes(self.path.parent)
        return free is not None and free < FULL_BELOW_BYTES

    def close(self) -> None:
        """Finalises the file (its index: an mp4 without one does not play) and checks it."""
        if self._writer is None:
            return
        self._writer.release()  # writes the index
        self._writer = None
        removed = self._removed()
        if self._watch is not None:
            os.close(self._watch)
            self._watch = None
        if self.failed:
            return  # the failing write already said why
        if removed:
            raise OutputError(f"cannot write video {self.path}: {REMOVED}")
        if self.frames and not _plays(self.path, self.frames):
            why = "the disk is full" if self._disk_full() else "the file is incomplete"
            raise OutputError(f"cannot finish video {self.path}: {why}")

    def __enter__(self) -> "VideoFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plays(path: Path, frames: int) -> bool:
    """Reads the finished container back: it opens and holds every frame written."""
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= frames
    finally:
        cap.release()


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


class JsonLinesFile:
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

    def __enter__(self) -> "JsonLinesFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(_clean(data), indent=2) + "\n")
