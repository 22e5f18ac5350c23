"""Where frames come from: a camera index, a video file, a folder of images, a stream URL.

Files and folders are read frame by frame and never drop a frame: the output video
must have the input's frame count. Cameras and streams are live: a reader thread keeps
only the newest frame, so a slow consumer sees the present rather than a growing
backlog, and a device or stream that fails mid-run is reopened with exponential backoff
while the consumer keeps its tracks and outputs; the gaps are recorded, and a source
that stays down longer than the caller allows ends with `SourceLost`.

A stream URL is handed to the decoder as given and shown everywhere else through
`redact`, so credentials in it never reach an output, a log or a store.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np

from .errors import SourceError
from .redact import redact

log = logging.getLogger(__name__)

SourceKind = Literal["camera", "file", "folder", "stream"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based position in the source (live: frames delivered)
    time: float  # seconds: file position for files; for live sources, arrival since the start
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


class SourceLost(SourceError):
    """A live source that stayed down longer than the caller was willing to wait."""

    exit_code = 3


@dataclass
class LiveStats:
    """What a live source has been through, in seconds since its start (`started`).

    Written by the reader thread, read by anyone: a gap is either in `gaps` or open in
    `open_gap_start`, never both, so a reader never counts one twice.
    """

    delivered: int = 0
    dropped: int = 0  # frames replaced by a newer one before the consumer took them
    reconnects: int = 0  # times frames came back after a gap
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (start, end) seconds since start
    # the current outage: from the last frame before it; None while frames flow
    open_gap_start: float | None = None
    retries: int = 0  # reconnection attempts in the open gap (or the last one, once it closed)
    kind: str = "stream"  # what the status line calls the source
    started: float = field(default_factory=time.monotonic)  # time.monotonic() of second 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def now(self) -> float:
        return time.monotonic() - self.started

    @property
    def down_for(self) -> float | None:
        """Seconds since the last frame while the source is down, else None."""
        start = self.open_gap_start
        return None if start is None else max(0.0, self.now() - start)

    @property
    def status(self) -> str | None:
        """One line for a progress display while the source is down, e.g. "stream down for 12 s, retry 4"."""
        down = self.down_for
        if down is None:
            return None
        attempt = f"retry {self.retries}" if self.retries else "reconnecting"
        return f"{self.kind} down for {format_duration(down)}, {attempt}"

    def gaps_so_far(self) -> list[tuple[float, float]]:
        """The recorded gaps and, if the source is down now, the open one ending now."""
        with self._lock:
            gaps = list(self.gaps)
            if self.open_gap_start is not None:
                gaps.append((self.open_gap_start, max(self.open_gap_start, self.now())))
        return gaps

    def _open_gap(self, start: float) -> None:
        with self._lock:
            if self.open_gap_start is None:
                self.open_gap_start, self.retries = start, 0

    def _close_gap(self, end: float) -> None:
        with self._lock:
            if self.open_gap_start is not None:
                self.gaps.append((self.open_gap_start, max(self.open_gap_start, end)))
                self.open_gap_start = None


def format_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours} h {minutes:02d} min"


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
    raise SourceError(f"source not found: {redact(spec)} (give a camera index, a video file, an image folder or a stream URL)")


def open_source(
    spec: str,
    folder_fps: float = 25.0,
    give_up_after_s: float | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
) -> "FrameSource":
    """The source `spec` names; a live one gives up after `give_up_after_s` without a frame.

    `give_up_after_s` None (or infinite) keeps a live source retrying until it is closed.
    A frame range (`start_frame`, `end_frame` excluded) applies to video files only.
    """
    kind = classify(spec)
    if kind != "file" and (start_frame, end_frame) != (0, None):
        raise SourceError(f"a frame range needs a video file, not a {kind}: {redact(spec)}")
    if kind == "file":
        return VideoFileSource(Path(spec), start_frame, end_frame)
    if kind == "folder":
        return ImageFolderSource(Path(spec), folder_fps)
    return LiveSource(spec, kind, give_up_after_s=give_up_after_s)


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
    """A video file, whole or the frames `start_frame` to `end_frame` (excluded) of it.

    Frames keep the file's own index and time (frame i at i / fps) whatever the range,
    so the events of a part of a file carry the file's times (realtime/batch/chunks.py).
    `info.frame_count` is the number of frames the range holds.

    A range starts with OpenCV's `CAP_PROP_POS_FRAMES` seek, which goes to the key frame
    before the start and decodes forward to it: the frames are the very pixels a
    sequential read gives at those indexes (measured on MPEG-4 part 2, H.264 with
    B-frames and GIF: tests/test_batch_chunks.py) and costs at most one key-frame
    interval of decoding. Grabbing every frame up to the start is exact too, but decodes
    everything before it: for the last 10-minute chunk of a 10-hour file, 9 h 50 min of
    video. OpenCV turns the frame number into a timestamp at the file's rate, so a file
    with a variable frame rate may start a range a few frames off (the chunks' overlap
    absorbs that; the frames still carry the indexes asked for).
    """

    def __init__(self, path: Path, start_frame: int = 0, end_frame: int | None = None) -> None:
        if start_frame < 0 or (end_frame is not None and end_frame <= start_frame):
            raise ValueError(f"frame range must satisfy 0 <= start < end, got {start_frame}..{end_frame}")
        self.path = path
        self.start_frame, self.end_frame = start_frame, end_frame
        self._cap = cv2.VideoCapture(str(path))
        ok, first = self._cap.read() if self._cap.isOpened() else (False, None)
        if not ok or first is None:
            self._cap.release()
            raise SourceError(f"not a readable video: {path}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if start_frame > 0:
            first = self._seek(start_frame, count)
        self._first: np.ndarray | None = first
        self.info = SourceInfo(
            kind="file",
            name=str(path),
            fps=fps if 0 < fps < 1000 else 25.0,
            width=first.shape[1],
            height=first.shape[0],
            frame_count=_range_count(count if count > 0 else None, start_frame, end_frame),
        )

    def _seek(self, start: int, count: int) -> np.ndarray:
        """The frame at `start`, the capture placed after it."""
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        ok, image = self._cap.read()
        if not ok or image is None:
            self._cap.release()
            total = f" of {count} frames" if count > 0 else ""
            raise SourceError(f"cannot read frame {start}{total} of video: {self.path}")
        return image

    def __iter__(self) -> Iterator[Frame]:
        index = self.start_frame
        while self.end_frame is None or index < self.end_frame:
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


def _range_count(count: int | None, start: int, end: int | None) -> int | None:
    """Frames in [start, end) of a file of `count` frames (None: unknown and unbounded)."""
    if count is None:
        return None if end is None else end - start
    return max(0, (count if end is None else min(count, end)) - start)


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


# Retry lines are logged at growing intervals (1 s, 2 s, 4 s ... then every 10 min), so a
# day-long outage writes a few hundred lines, not one per attempt.
FIRST_LOG_INTERVAL_S = 1.0
MAX_LOG_INTERVAL_S = 600.0


class LiveSource(FrameSource):
    """A camera or stream read on its own thread, newest frame wins.

    A frame's time is when it arrived, so gaps are measured from the last frame before
    an outage (not from when a read timed out) to the first frame after it (not to when
    the capture reopened). Outages are logged on the `realtime.sources` logger.
    """

    def __init__(
        self,
        spec: str,
        kind: SourceKind,
        timeout_ms: int = 5000,
        backoff: tuple[float, float] = (0.5, 30.0),
        give_up_after_s: float | None = None,
    ) -> None:
        self.spec, self.kind, self.timeout_ms = spec, kind, timeout_ms
        self.backoff = backoff
        if give_up_after_s is not None and not give_up_after_s > 0:  # NaN included
            raise ValueError(f"give_up_after_s must be positive or None, got {give_up_after_s}")
        self.give_up_after_s = give_up_after_s if give_up_after_s is not None else math.inf
        name = redact(spec)
        self._what = f"camera {name}" if kind == "camera" else f"stream {name}"
        cap = _open_capture(spec, kind, timeout_ms)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise SourceError(f"{self._what} could not be opened or gave no frame")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.info = SourceInfo(kind, name, fps if 0 < fps < 1000 else 30.0, first.shape[1], first.shape[0], None)
        self.stats = LiveStats(kind=kind)
        self._cap = cap
        self._last_frame = 0.0  # arrival of the newest frame, seconds since start
        self._delay = backoff[0]
        self._next_log = 0.0  # down time at which the next retry is logged
        self._log_interval = FIRST_LOG_INTERVAL_S
        self._lost: SourceLost | None = None
        self._cond = threading.Condition()
        self._latest: tuple[np.ndarray, float] | None = (first, 0.0)
        self._seq = 1
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, name=f"source-{name}", daemon=True)
        self._thread.start()

    def _publish(self, image: np.ndarray | None, at: float = 0.0, ended: bool = False) -> None:
        with self._cond:
            if image is not None:
                self._latest = (image, at)
                self._seq += 1
            self._ended = self._ended or ended
            self._cond.notify_all()

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                ok, image = self._cap.read()
                if ok and image is not None:
                    self._arrived(image)
                elif not self._reconnect():
                    return
        finally:
            # released here, never under a read in progress on this thread
            self._cap.release()
            self._publish(None, ended=True)

    def _arrived(self, image: np.ndarray) -> None:
        now = self.stats.now()
        stats = self.stats
        if stats.open_gap_start is not None:
            down = now - stats.open_gap_start
            stats._close_gap(now)
            stats.reconnects += 1
            log.warning("%s back after %s (%s)", self._what, format_duration(down), _attempts(stats.retries))
            self._delay, self._next_log, self._log_interval = self.backoff[0], 0.0, FIRST_LOG_INTERVAL_S
        self._last_frame = now
        self._publish(image, now)

    def _reconnect(self) -> bool:
        """Reopens with growing pauses; False when stopped or given up.

        A capture that opens but then gives no frame brings the loop back here with the
        gap still open and the pause still growing.
        """
        self._cap.release()
        stats = self.stats
        stats._open_gap(self._last_frame)
        while not self._stop.is_set():
            down = stats.now() - self._last_frame
            if down >= self.give_up_after_s:
                self._give_up()
                return False
            # never sleep past the moment to give up
            if self._stop.wait(min(self._delay, self.give_up_after_s - down)):
                return False
            if stats.now() - self._last_frame >= self.give_up_after_s:
                continue
            stats.retries += 1
            self._log_retry()
            cap = _open_capture(self.spec, self.kind, self.timeout_ms)
            self._delay = min(self._delay * 2.0, self.backoff[1])
            if cap.isOpened() and not self._stop.is_set():
                self._cap = cap
                return True
            cap.release()
        return False

    def _log_retry(self) -> None:
        down = self.stats.now() - self._last_frame
        if down < self._next_log:
            return
        self._next_log = down + self._log_interval
        self._log_interval = min(self._log_interval * 2.0, MAX_LOG_INTERVAL_S)
        log.warning("%s down for %s, retry %d", self._what, format_duration(down), self.stats.retries)

    def _give_up(self) -> None:
        stats = self.stats
        down = stats.now() - self._last_frame
        stats._close_gap(stats.now())
        self._lost = SourceLost(f"{self._what} lost: no frame for {format_duration(down)} ({_attempts(stats.retries)}), giving up")

    def __iter__(self) -> Iterator[Frame]:
        seen = 0
        while not self._stop.is_set():
            with self._cond:
                while self._seq == seen and not self._ended and not self._stop.is_set():
                    self._cond.wait(timeout=0.5)
                if self._seq == seen:
                    break
                latest, seq = self._latest, self._seq
            self.stats.dropped += max(0, seq - seen - 1)
            seen = seq
            assert latest is not None
            image, at = latest
            yield Frame(self.stats.delivered, at, image)
            self.stats.delivered += 1
        if self._lost is not None and not self._stop.is_set():
            raise self._lost

    def close(self) -> None:
        """Stops the reader; an outage still open is recorded as a gap ending now.

        A read or open in progress ends within the timeout; a reader stuck beyond that
        (a camera driver) is left to release the capture itself when it returns.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout_ms / 1000 + 1)
        self.stats._close_gap(self.stats.now())


def _attempts(count: int) -> str:
    return f"{count} reconnection attempt{'' if count == 1 else 's'}"
