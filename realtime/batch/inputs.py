"""Which video files a batch run processes: files, folders (recursive) and lists of paths.

An INPUT on the command line is
- a video file (any name: the user named it),
- a folder, walked recursively for files with a video extension (`VIDEO_SUFFIXES`),
  symlinked folders not followed, hidden files and folders skipped, and the run's own
  `--out` folder skipped (so that annotated videos never become inputs),
- a list of paths, one per line (blank lines and lines starting with `#` ignored,
  relative paths read from the list's folder): `@list` or any file ending in `.txt`.
  A list's lines are files or folders, not further lists.

Paths are made absolute (workers on other nodes have another working folder) and each
file is taken once however many inputs name it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import UserError

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".gif"})
LIST_PREFIX = "@"
LIST_SUFFIX = ".txt"


def collect_inputs(specs: Sequence[str], skip: Path | None = None) -> list[Path]:
    """The video files `specs` name, absolute, in the order given, each once.

    UserError for a path that does not exist or an unreadable list; `skip` is a folder
    never walked into (the output folder)."""
    files: list[Path] = []
    seen: set[str] = set()
    for path in _expand(specs, skip, lists=True):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            files.append(path)
    return files


def _expand(specs: Iterable[str], skip: Path | None, lists: bool, base: Path | None = None) -> Iterator[Path]:
    for spec in specs:
        if lists and (spec.startswith(LIST_PREFIX) or (spec.lower().endswith(LIST_SUFFIX) and Path(spec).is_file())):
            list_path = Path(spec[1:] if spec.startswith(LIST_PREFIX) else spec)
            yield from _expand(read_list(list_path), skip, lists=False, base=absolute(list_path).parent)
            continue
        path = absolute(Path(spec) if base is None else base / spec)
        if path.is_dir():
            yield from walk_videos(path, skip)
        elif path.is_file():
            yield path
        else:
            where = f" (listed relative to {base})" if base is not None else ""
            raise UserError(f"input not found: {spec}{where}")


def read_list(path: Path) -> list[str]:
    """The paths in a list file: one per line, without blank lines and # comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"list of inputs not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read list of inputs {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def walk_videos(folder: Path, skip: Path | None = None) -> Iterator[Path]:
    """Video files under `folder`, in name order, depth first."""
    skipped = os.path.realpath(skip) if skip is not None else None
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) != skipped)
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_SUFFIXES:
                yield Path(root) / name


def absolute(path: Path) -> Path:
    """Absolute without resolving symlinks: the manifest keeps the path the user gave."""
    return Path(os.path.abspath(path))
