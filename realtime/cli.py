"""What every command line of the project shares: one-line usage errors, checked number
arguments, quiet native libraries, and one line (never a traceback) for a failure.

    from realtime.cli import OneLineParser, positive_int, run_command, silence_native_logs

    silence_native_logs()  # before OpenCV, MediaPipe or TensorFlow load

Exit codes, the same for every command: 0 done, 2 bad input (`UserError.exit_code`, or a
usage error), 1 unexpected error, 130 interrupted. `AGEGENDER_DEBUG=1` lets an unexpected
error through with its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import UserError
from .shutdown import EXIT_INTERRUPTED

EXIT_UNEXPECTED = 1
DEBUG_ENV = "AGEGENDER_DEBUG"

# read by the native libraries when they load, so they must be set before that
NATIVE_LOG_LEVELS = {
    # OpenCV prints multi-line C++ errors for a missing camera; the product reports such
    # failures itself, in one line
    "OPENCV_LOG_LEVEL": "OFF",
    "OPENCV_FFMPEG_LOGLEVEL": "-8",
    # mediapipe and TensorFlow write C++ log lines on stderr at start-up
    "GLOG_minloglevel": "2",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def silence_native_logs() -> None:
    """Quiet the native libraries' own logging, unless the user set a level."""
    for name, value in NATIVE_LOG_LEVELS.items():
        os.environ.setdefault(name, value)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and exit 2), not the usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


# --- number arguments --------------------------------------------------------------------
# each raises argparse.ArgumentTypeError with "expected ..., got '<text>'", which the
# parser reports in one line


def _refuse(expected: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")


def checked_number(
    text: str, kind: Callable[[str], float], accept: Callable[[float], bool], expected: str, unparsable: str | None = None
) -> float:
    """`kind(text)` if `accept` takes it; else ArgumentTypeError "expected `expected`"
    (`unparsable` instead when the text is no number at all)."""
    try:
        value = kind(text)
    except ValueError:
        raise _refuse(unparsable or expected, text) from None
    if not accept(value):
        raise _refuse(expected, text)
    return value


def finite_float(text: str, expected: str = "a number") -> float:
    """A number, never inf or NaN: inf passes `> 0` and NaN fails every test silently, and
    either breaks the arithmetic downstream (`--track-timeout inf` crashed the tracker)."""
    return checked_number(text, float, math.isfinite, expected)


def positive_int(text: str) -> int:
    return int(checked_number(text, int, lambda v: v > 0, "a positive integer"))


def positive_float(text: str) -> float:
    return checked_number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    return checked_number(text, float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0", unparsable="a number")


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (a threshold, a fraction)."""
    return checked_number(text, float, lambda v: 0 < v < 1, "a number between 0 and 1")


def port_number(text: str) -> int:
    return int(checked_number(text, int, lambda v: 0 <= v <= 65535, "a port number 0-65535", unparsable="a port number"))


# --- running a command -------------------------------------------------------------------


def run_main(
    make_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None, work: Callable[[argparse.Namespace, Any], int]
) -> int:
    """A command's `main`: stop signals handled from the first moment (a stop while the
    parser is built or the model loads is as orderly as one mid-run), the arguments
    parsed, then `work(args, console)` through `run_command`."""
    from .shutdown import Shutdown

    with Shutdown() as shutdown:
        def interrupted() -> str:
            return f"interrupted by {shutdown.signal_name or 'SIGINT'}"

        try:
            args = make_parser().parse_args(argv)
            from rich.console import Console

            console = Console(stderr=True)
        except KeyboardInterrupt:
            # a stop this early (the parser's imports, rich's) is said in one line like one mid-run
            print(interrupted(), file=sys.stderr)
            return EXIT_INTERRUPTED
        return run_command(lambda: work(args, console), interrupted=interrupted)


def run_command(work: Callable[[], int], interrupted: Callable[[], str] = lambda: "interrupted") -> int:
    """`work()`'s exit code, with every failure reported in one line on stderr.

    `interrupted` says what stopped a run that ended in KeyboardInterrupt (a signal's name,
    where the command knows it).
    """
    try:
        return work()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(interrupted(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)", file=sys.stderr)
        return EXIT_UNEXPECTED
