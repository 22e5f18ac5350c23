"""Where frames come from: a camera index, a video file, a folder of images, a stream URL.

Files and folders are read frame by frame and never drop a frame: the output video
must have the input's frame count. Cameras and streams are live: a reader thread keeps
only the newest frame, so a slow consumer sees the present rather than a growing
backlog, and a device or stream that fails mid-run is reopened with exponential backoff
while the consumer keeps its tracks and outputs; the gaps are recorded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np

from .errors import SourceError

SourceKind = Literal["camera", "file", "folder", "stream"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based position in the source (live: frames delivered)
    time: float  # seconds: file position for files, since start for live sources
    image: np.ndarray  # BGR uint8


@dataclass(frozen=True)
class SourceInfo:
    kind: SourceKind
    name: str
    fps: float
    width: int
    height: int
    frame_count: int | None  # None for live sources

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "stream")


@dataclass
class LiveStats:
    delivered: int = 0
    dropped: int = 0  # frames replaced by a newer one before the consumer took them
    reconnects: int = 0
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start, end) seconds since start


def classify(spec: str) -> SourceKind:
    if spec.strip().isdigit():
        return "camera"
    if spec.lower().startswith(STREAM_SCHEMES):
        return "stream"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise SourceError(f"source not found: {spec} (give a camera index, a video file, an image folder or a stream URL)")


def open_source(spec: str, folder_fps: float = 25.0, reconnect_limit_s: float | None = None) -> "FrameSource":
    kind = classify(spec)
    if kind == "file":
        return VideoFileSource(Path(spec))
    if kind == "folder":
        return ImageFolderSource(Path(spec), folder_fps)
    return LiveSource(spec, kind, reconnect_limit_s=reconnect_limit_s)


class FrameSource:
    info: SourceInfo

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _capture_size(cap: cv2.VideoCapture) -> tuple[int, int]:
    return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))


class VideoFileSource(FrameSource):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._cap = cv2.VideoCapture(str(path))
        ok, first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok or first is None:
            self._cap.release()
            raise SourceError(f"not a readable video: {path}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._first: np.ndarray | None = first
        self.info = SourceInfo(
            kind="file",
            name=str(path),
            fps=fps if 0 < fps < 1000 else 25.0,
            width=first.shape[1],
            height=first.shape[0],
            frame_count=count if count > 0 else None,
        )

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            if self._first is not None:
                image, self._first = self._first, None
            else:
                ok, image = self._cap.read()
                if not ok:
                    return
            yield Frame(index, index / self.info.fps, image)
            index += 1

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource(FrameSource):
    """Images in name order, as frames at a nominal rate; unreadable files are skipped."""

    def __init__(self, path: Path, fps: float) -> None:
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        first = next((img for img in map(_read_image, self.files) if img is not None), None)
        if first is None:
            raise SourceError(f"no readable images in folder: {path}")
        self.skipped: list[str] = []
        self.info = SourceInfo("folder", str(path), fps, first.shape[1], first.shape[0], len(self.files))

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for file in self.files:
            image = _read_image(file)
            if image is None:
                self.skipped.append(str(file))
                continue
            yield Frame(index, index / self.info.fps, image)
            index += 1


def _read_image(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def _open_capture(spec: str, kind: SourceKind, timeout_ms: int) -> cv2.VideoCapture:
    if kind == "camera":
        return cv2.VideoCapture(int(spec))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)


class LiveSource(FrameSource):
    """A camera or stream read on its own thread, newest frame wins."""

    def __init__(
        self,
        spec: str,
        kind: SourceKind,
        timeout_ms: int = 5000,
        backoff: tuple[float, float] = (0.5, 30.0),
        reconnect_limit_s: float | None = None,
    ) -> None:
        self.spec, self.kind, self.timeout_ms = spec, kind, timeout_ms
        self.backoff = backoff
        self.reconnect_limit_s = reconnect_limit_s  # None: keep trying until stopped
        self.stats = LiveStats()
        cap = _open_capture(spec, kind, timeout_ms)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            what = f"camera {spec}" if kind == "camera" else f"stream {spec}"
            raise SourceError(f"{what} could not be opened or gave no frame")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.info = SourceInfo(kind, spec, fps if 0 < fps < 1000 else 30.0, first.shape[1], first.shape[0], None)
        self._cap = cap
        self._start = time.monotonic()
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = first
        self._seq = 1
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"source-{spec}", daemon=True)
        self._thread.start()

    def _publish(self, image: np.ndarray | None, ended: bool = False) -> None:
        with self._cond:
            if image is not None:
                self._latest = image
                self._seq += 1
            self._ended = self._ended or ended
            self._cond.notify_all()

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            ok, image = self._cap.read()
            if ok and image is not None:
                self._publish(image)
                continue
            if not self._reconnect():
                self._publish(None, ended=True)
                return

    def _reconnect(self) -> bool:
        """Reopen with growing pauses; False when stopped or past the reconnect limit."""
        self._cap.release()
        gap_start = time.monotonic()
        delay = self.backoff[0]
        while not self._stop.is_set():
            if self.reconnect_limit_s is not None and time.monotonic() - gap_start > self.reconnect_limit_s:
                return False
            if self._stop.wait(delay):
                return False
            cap = _open_capture(self.spec, self.kind, self.timeout_ms)
            if cap.isOpened():
                self._cap = cap
                self.stats.reconnects += 1
                self.stats.gaps.append((gap_start - self._start, time.monotonic() - self._start))
                return True
            cap.release()
            delay = min(delay * 2.0, self.backoff[1])
        return False

    def __iter__(self) -> Iterator[Frame]:
        seen = 0
        while not self._stop.is_set():
            with self._cond:
                while self._seq == seen and not self._ended and not self._stop.is_set():
                    self._cond.wait(timeout=0.5)
                if self._seq == seen:
                    return
                image, seq = self._latest, self._seq
            self.stats.dropped += max(0, seq - seen - 1)
            seen = seq
            assert image is not None
            yield Frame(self.stats.delivered, time.monotonic() - self._start, image)
            self.stats.delivered += 1

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout_ms / 1000 + 1)
        self._cap.release()
