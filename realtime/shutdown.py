"""Ctrl-C, SIGTERM and SIGHUP end a run in order, promptly, whatever it is doing.

- The first signal asks the run to stop. Between frames (waiting for a live source,
  loading the model) it stops at once. Inside a frame it is held until the frame is
  fully recorded, so the events never run one frame past the video, but only for
  `grace_s`: a frame that takes longer (a huge tiled scan, a stuck engine) is abandoned
  unrecorded and the run flushes what is complete.
- A second signal exits at once (exit 130): JSON lines are flushed line by line, so
  what they hold stays valid; the video and summary may be missing. "At once" holds even
  while the main thread is inside a long native call (Python runs its handlers only
  between bytecodes): the signal also reaches a watcher thread through the wakeup fd.
- Should the stop itself hang (a call into native code that never returns), the
  process exits `hard_s` after the first signal all the same.

SIGHUP is a closed terminal or a dropped ssh session: the same orderly stop as SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

EXIT_INTERRUPTED = 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when a stop signal ends the run."""


@dataclass(frozen=True)
class ShutdownOptions:
    grace_s: float = 3.0  # longest wait for the frame in progress
    hard_s: float = 20.0  # longest wait for the whole stop, flushing included


class Shutdown:
    """The process's stop-signal handlers: install once, in the main thread."""

    _active: "Shutdown | None" = None

    def __init__(self, options: ShutdownOptions = ShutdownOptions()) -> None:
        self.options = options
        self.requested: int | None = None  # the first signal's number
        self._busy = False
        self._previous: dict[int, object] = {}
        self._watchdog: threading.Timer | None = None
        self._wakeup: tuple[int, int] | None = None  # (read, write) ends of the wakeup pipe
        self._previous_wakeup = -1
        self._seen = 0  # stop signals counted by the watcher thread
        self._exiting = threading.Lock()

    @classmethod
    def create_from_options(cls, options: ShutdownOptions) -> "Shutdown":
        return cls(options)

    @classmethod
    def active(cls) -> "Shutdown | None":
        return cls._active

    def install(self) -> "Shutdown":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals only reach the main thread; a caller there owns them
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        signal.signal(signal.SIGALRM, self._grace_over)
        self._watch_wakeup_fd()
        Shutdown._active = self
        return self

    def _watch_wakeup_fd(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)  # the C-level handler must never block on it
        self._previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._wakeup = (read_end, write_end)
        threading.Thread(target=self._watch, args=(read_end,), name="second-signal", daemon=True).start()

    def _watch(self, read_end: int) -> None:
        # a blocking read releases the GIL, so this runs while the main thread is in
        # OpenCV or ONNX Runtime; the first stop is the main thread's to handle
        try:
            while data := os.read(read_end, 64):
                for signum in data:
                    if signum in STOP_SIGNALS:
                        self._seen += 1
                        if self._seen >= 2:
                            self._exit_now(signum)
        except OSError:
            pass
        finally:
            os.close(read_end)

    def close(self) -> None:
        """Restores the handlers found at install; the watchdog, if armed, is stopped."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if Shutdown._active is not self:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(self._wakeup[1])  # the watcher reads end-of-file and closes its end
            self._wakeup = None
        Shutdown._active = None

    def __enter__(self) -> "Shutdown":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested is not None:
            self._exit_now(signum)
        self.requested = signum
        self._arm_watchdog()
        if self._busy:
            signal.setitimer(signal.ITIMER_REAL, self.options.grace_s)
            return
        raise Interrupted()

    def _grace_over(self, _signum: int, _frame: object) -> None:
        if self._busy and self.requested is not None:
            self._busy = False
            raise Interrupted()

    def _arm_watchdog(self) -> None:
        self._watchdog = threading.Timer(self.options.hard_s, self._exit_now, args=(None,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _exit_now(self, signum: int | None) -> None:
        if not self._exiting.acquire(blocking=False):
            return  # another thread is already exiting: one message, one exit
        why = f"second {signal.Signals(signum).name}" if signum else f"still stopping {self.options.hard_s:g} s after {self.signal_name}"
        try:
            os.write(sys.stderr.fileno(), f"{why}: exiting now\n".encode())
        except (OSError, ValueError):
            pass
        os._exit(EXIT_INTERRUPTED)

    @contextmanager
    def frame(self) -> Iterator[None]:
        """One frame's work: a stop signal waits for it to end (up to the grace time)."""
        if self.requested is not None:
            raise Interrupted()
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        if self.requested is not None:
            raise Interrupted()


@contextmanager
def stop_signals(options: ShutdownOptions = ShutdownOptions()) -> Iterator[Shutdown]:
    """The active Shutdown, installing one for the duration if none is."""
    active = Shutdown.active()
    if active is not None:
        yield active
        return
    with Shutdown(options) as shutdown:
        yield shutdown
