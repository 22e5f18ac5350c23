"""The output folder of a batch run: what is in it, what each file is called, and the
checks that keep the user's files safe.

    OUT/manifest.json          every file's status (manifest.py)
    OUT/people.parquet, .csv   every person in every file done (results.py)
    OUT/files/<name>-<hash>/   one folder per input: events.jsonl, summary.json,
                               annotated.mp4 (--video): what run_camera.py writes

The folder holds only files the command wrote: a folder that exists, is not empty and
has no batch manifest is refused, so nothing of the user's is ever overwritten. An input
that is the output folder or lies inside it is refused too.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError

MANIFEST = "manifest.json"
PEOPLE_PARQUET = "people.parquet"
PEOPLE_CSV = "people.csv"
FILES_DIR = "files"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
VIDEO = "annotated.mp4"
NAME_CHARS = 60  # of the input's name in its folder's name; the hash keeps it unique


def output_folder_name(path: Path) -> str:
    """A file-system-safe folder name for one input: its name plus a hash of its full path,
    so that `a/clip.mp4` and `b/clip.mp4` never share a folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name)[:NAME_CHARS].strip("._") or "video"
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{safe}-{digest}"


def check_out_dir(out: Path, inputs: Sequence[Path]) -> None:
    """UserError unless `out` can hold this run's results without touching anything else."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    real_out = os.path.realpath(out)
    for path in inputs:
        real = os.path.realpath(path)
        if real == real_out or real.startswith(real_out.rstrip(os.sep) + os.sep):
            raise UserError(f"--out {out} holds the input {path}: choose another folder")
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty and holds no batch manifest: choose a new or empty folder")


def create_out_dir(out: Path) -> None:
    try:
        (out / FILES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out {out} is not writable")
