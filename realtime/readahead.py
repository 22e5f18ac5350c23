"""Decoding on a thread of its own, a few frames ahead of the analysis."""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator

from .sources import Frame, FrameSource

# frames decoded ahead of the analyzer: enough to ride out one slow frame (a full scan,
# a batch of new faces) without holding many decoded 4K frames in memory
READ_AHEAD = 4


class ReadAhead:
    """Frames decoded on a thread of their own, up to `depth` ahead of the consumer.

    Decoding a 1080p frame costs about as much CPU as finding the faces in it. OpenCV
    releases the GIL while it decodes, so on a thread the decoder runs on another core
    alongside the analysis instead of before it. Order and content are unchanged; an
    error in the decoder is raised in the consumer.
    """

    _END = object()

    def __init__(self, frames: Iterable[Frame], depth: int = READ_AHEAD) -> None:
        self._frames = frames
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self._frames:
                if not self._put(frame):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(self._END)

    def _put(self, item: object) -> bool:
        """Waits for room in the queue; False once the consumer has stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stops the decoder thread; the source may be released after this returns."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def frames_of(source: FrameSource) -> Iterator[Iterable[Frame]]:
    """The source's frames, decoded ahead for files and folders.

    Live sources already read on their own thread and keep only the newest frame,
    which a queue in front of them would only delay.
    """
    if source.info.live:
        yield source
        return
    with ReadAhead(source) as frames:
        yield frames
