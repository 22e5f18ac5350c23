"""realtime.cli: the argument types, the one-line parser and the error mapping every command shares."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from realtime.cli import (
    OneLineParser,
    non_negative_float,
    port_number,
    positive_float,
    positive_int,
    probability,
    run_command,
)
from realtime.errors import UserError
from realtime.paths import ROOT


@pytest.mark.parametrize(
    "parse, good, bad",
    [
        (positive_int, {"3": 3}, ["0", "-1", "2.5", "x", ""]),
        (positive_float, {"0.5": 0.5}, ["0", "-1", "inf", "nan", "x"]),
        (non_negative_float, {"0": 0.0, "2": 2.0}, ["-0.1", "inf", "nan", "x"]),
        (probability, {"0.5": 0.5}, ["0", "1", "nan", "inf", "x"]),
        (port_number, {"0": 0, "65535": 65535}, ["-1", "65536", "x"]),
    ],
)
def test_number_arguments(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"^expected .*, got {text!r}$"):
            parse(text)


def test_usage_error_is_one_line_and_exit_2(capsys):
    parser = OneLineParser(prog="prog")
    parser.add_argument("--n", type=positive_int)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--n", "-4"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "prog: error: argument --n: expected a positive integer, got '-4'\n"


def fail(exc: BaseException):
    def work() -> int:
        raise exc

    return work


def test_failures_are_one_line_with_their_exit_code(capsys, monkeypatch):
    monkeypatch.delenv("AGEGENDER_DEBUG", raising=False)
    assert run_command(lambda: 0) == 0
    assert run_command(fail(UserError("bad input"))) == 2
    assert capsys.readouterr().err == "error: bad input\n"
    assert run_command(fail(KeyboardInterrupt()), interrupted=lambda: "interrupted by SIGTERM") == 130
    assert capsys.readouterr().err == "interrupted by SIGTERM\n"
    assert run_command(fail(RuntimeError("boom\nsecond line"))) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected RuntimeError: boom") and "AGEGENDER_DEBUG" in err and "Traceback" not in err


def test_debug_lets_the_traceback_through(monkeypatch):
    monkeypatch.setenv("AGEGENDER_DEBUG", "1")
    with pytest.raises(RuntimeError):
        run_command(fail(RuntimeError("boom")))


def test_native_logs_are_silenced_unless_set():
    code = (
        "import os; os.environ['GLOG_minloglevel'] = '0'\n"
        "from realtime.cli import silence_native_logs; silence_native_logs()\n"
        "print(os.environ['OPENCV_LOG_LEVEL'], os.environ['GLOG_minloglevel'], os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OPENCV_LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["OFF", "0", "3"]
