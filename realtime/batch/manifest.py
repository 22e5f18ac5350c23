"""The manifest: every input's status in one JSON file, rewritten atomically as files finish.

A file is done for good when its entry is `done` with the same key: path, size,
modification time and the model file's SHA-256. Anything else (a new file, a changed
one, another model, a `failed` or `pending` entry) is processed on the next run. Entries
are `pending` from the moment a run plans them until their worker answers, so a killed
run leaves its files in flight `pending`: retried, never counted as done. The file is
replaced atomically after every answer (realtime.files), so a kill loses at most the
files in flight and the manifest on disk is always whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal

from ..errors import UserError
from ..files import write_text_atomic

FORMAT = "agegender-batch-manifest"
VERSION = 1
Status = Literal["pending", "done", "failed"]


@dataclass(frozen=True)
class FileKey:
    """What makes a finished result still valid for a file."""

    path: str
    size: int
    mtime_ns: int
    model_sha256: str


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute, as the user named it
    size: int
    mtime_ns: int
    model_sha256: str
    output: str  # the file's folder, relative to --out
    status: Status = "pending"
    frames: int = 0
    people: int = 0
    video_seconds: float = 0.0
    processing_seconds: float = 0.0
    error: str | None = None
    attempts: int = 0  # worker answers so far (done or failed); a kill in flight adds none
    finished_at: float | None = None  # Unix time of the last answer
    node: str | None = None  # the Ray node that processed it (nodes, comma-separated, for a file in chunks)
    chunks: int = 1  # jobs the file was cut into (chunks.py); 1: processed whole

    @property
    def key(self) -> FileKey:
        return FileKey(self.path, self.size, self.mtime_ns, self.model_sha256)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "mtime": self.mtime_ns / 1e9}


def file_key(path: Path, model_sha256: str) -> FileKey:
    """The file's key now (OSError when it has gone)."""
    st = os.stat(path)
    return FileKey(str(path), st.st_size, st.st_mtime_ns, model_sha256)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    except OSError as exc:
        raise UserError(f"cannot read model {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


class Manifest:
    """The entries by path, and where they are kept."""

    def __init__(self, path: Path, entries: dict[str, FileEntry] | None = None) -> None:
        self.path = path
        self.entries: dict[str, FileEntry] = dict(entries or {})

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at `path`, or an empty one if there is none yet (UserError if it is not ours)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read the batch manifest {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path} is not a batch manifest: choose a new or empty --out folder")
        if data.get("version") != VERSION:
            raise UserError(f"{path} is a batch manifest of version {data.get('version')}, this program reads {VERSION}")
        names = {f.name for f in fields(FileEntry)}
        try:
            entries = [FileEntry(**{k: v for k, v in item.items() if k in names}) for item in data["files"]]
        except (KeyError, TypeError) as exc:
            raise UserError(f"the batch manifest {path} is damaged ({exc}): move it away to start again") from None
        return cls(path, {e.path: e for e in entries})

    def is_done(self, key: FileKey) -> bool:
        entry = self.entries.get(key.path)
        return entry is not None and entry.status == "done" and entry.key == key

    def plan(self, key: FileKey, output: str) -> FileEntry:
        """`key`'s file queued for this run: pending, keeping its count of earlier attempts."""
        old = self.entries.get(key.path)
        entry = FileEntry(key.path, key.size, key.mtime_ns, key.model_sha256, output, attempts=old.attempts if old else 0)
        self.entries[key.path] = entry
        return entry

    def put(self, entry: FileEntry) -> None:
        self.entries[entry.path] = entry

    def finished(self, path: str, **changes: object) -> FileEntry:
        """The entry for `path` with a worker's answer recorded (one more attempt)."""
        old = self.entries[path]
        entry = replace(old, attempts=old.attempts + 1, **changes)  # type: ignore[arg-type]
        self.entries[path] = entry
        return entry

    def done(self) -> Iterator[FileEntry]:
        return (e for e in self.entries.values() if e.status == "done")

    def save(self) -> None:
        data = {"format": FORMAT, "version": VERSION, "files": [e.to_dict() for e in sorted(self.entries.values(), key=lambda e: e.path)]}
        write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")
