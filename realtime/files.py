"""Writing files without destroying anything: path identity, atomic replacement, free space.

Every output path the product writes goes through here, so the rules hold everywhere:
- an output never names an input or another output, whatever links or spellings lead
  to it (`refuse_clashes`), checked before anything is opened;
- a whole-file output (summary, report) is replaced atomically, but only when the path
  is a regular file: a symlink is written through to its target, a character device or
  a FIFO is written to in place, and nothing else is ever turned into a regular file;
- new files get the permissions the user's umask gives, existing files keep theirs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .errors import OutputError


@dataclass(frozen=True)
class FileIdentity:
    """What makes two paths the same file: the resolved path, or the inode once it exists."""

    resolved: str
    inode: tuple[int, int] | None

    @classmethod
    def of(cls, path: str | Path) -> "FileIdentity":
        resolved = os.path.realpath(path)
        try:
            st = os.stat(resolved)
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            inode = None
        return cls(resolved, inode)

    def same_as(self, other: "FileIdentity") -> bool:
        if self.inode is not None and self.inode == other.inode:
            return True  # hard links, bind mounts
        return self.resolved == other.resolved


def refuse_clashes(outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]) -> None:
    """OutputError when an output is an input, or two outputs are one file.

    `outputs` and `inputs` map an option name (for the message) to a path; None is
    skipped. A folder input counts as every file in it.
    """
    seen: list[tuple[str, FileIdentity]] = []
    for name, path in inputs.items():
        for file in _files_of(path):
            seen.append((name, FileIdentity.of(file)))
    for name, path in outputs.items():
        if path is None:
            continue
        identity = FileIdentity.of(path)
        for other_name, other in seen:
            if identity.same_as(other):
                what = "the input" if other_name in inputs else "the output"
                raise OutputError(f"{name} {path} is the same file as {what} of {other_name}: refusing to overwrite it")
        seen.append((name, identity))


def _files_of(path: Path | None) -> Iterable[Path]:
    if path is None:
        return []
    if os.path.isdir(path):
        try:
            return [p for p in Path(path).iterdir() if p.is_file()]
        except OSError:
            return []
    return [Path(path)]


def current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: the only portable read is a write-and-restore
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """The file at `path` holds `data` entirely, or is left as it was (OutputError)."""
    shown = Path(path)
    target = Path(os.path.realpath(path))  # a symlink keeps pointing where it did
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {exc.strerror}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            _write_in_place(shown, target, data, fifo=stat.S_ISFIFO(st.st_mode))
            return
        raise OutputError(f"cannot write {shown}: not a regular file")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~current_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {shown}: {exc.strerror or exc}") from None
    _fsync_dir(target.parent)


def _write_in_place(shown: Path, target: Path, data: bytes, fifo: bool) -> None:
    # a FIFO opened for writing blocks until a reader comes: never hang on one
    flags = os.O_WRONLY | (os.O_NONBLOCK if fifo else 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        reason = "no process is reading the FIFO" if exc.errno == errno.ENXIO else exc.strerror
        raise OutputError(f"cannot write {shown}: {reason}") from None
    try:
        if fifo:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """The rename itself survives a power cut only once the folder is synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def free_bytes(folder: str | Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
