"""The live window, opened only where one can really open.

OpenCV's Qt backend aborts the whole process (SIGABRT, no exception) when its display
cannot be reached: a dead X server in DISPLAY, a bogus WAYLAND_DISPLAY, an ssh session
without forwarding. An abort would lose the video index, the events still open and the
summary, so the window is first opened by a throw-away child process; only if that
child exits cleanly does this process open one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import cv2

WINDOW = "agegender"
PROBE_TIMEOUT_S = 20.0
_PROBE = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"


def display_problem() -> str | None:
    """None when a window can open here, else why not (one short phrase)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display found"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=PROBE_TIMEOUT_S,
            env={**os.environ, "OPENCV_LOG_LEVEL": "OFF"},
        )
    except subprocess.TimeoutExpired:
        return "the display did not answer"
    except OSError as exc:
        return f"cannot test the display ({exc.strerror})"
    if done.returncode != 0:
        where = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the display"
        return f"cannot open a window on {where}"
    return None


def show(frame: Any) -> bool:
    """Shows the frame; False when the user pressed q or Esc. Raises cv2.error."""
    cv2.imshow(WINDOW, frame)
    key = cv2.waitKey(1) & 0xFF
    return key not in (ord("q"), 27)


def close() -> None:
    try:
        cv2.destroyAllWindows()
    except cv2.error:
        pass
