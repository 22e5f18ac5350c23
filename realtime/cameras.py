"""The cameras of a multi-stream run: each one's name, source and own options.

    run_camera.py --source door.mp4 --source rtsp://cam2/stream
    run_camera.py --sources cameras.toml

A cameras file lists one `[[camera]]` table per stream:

    [[camera]]
    name = "door"                # names its outputs ({name} in a path) and its summary entry
    source = "rtsp://10.0.0.5/stream"
    detect_every = 2             # any of CAMERA_OPTIONS; the rest come from the command line
    kiosk_id = "door-left"       # the camera id on this camera's kiosk visits (default: name)

Everything here is pure: names are checked and made unique, options are checked by the
option dataclasses themselves, and nothing is opened.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any, Mapping, Sequence

from .errors import UserError
from .redact import redact
from .sources import STREAM_SCHEMES

NAME_TEMPLATE = "{name}"
# what a name may hold: it becomes part of file names
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CameraOverrides:
    """Per-camera options; None: the command line's value."""

    detect_every: int | None = None
    scan_interval: int | None = None
    min_face_px: float | None = None
    still_rescan_s: float | None = None
    track_timeout_s: float | None = None
    refresh_frames: int | None = None
    folder_fps: float | None = None
    give_up_after_s: float | None = None


# the cameras file's keys beside name, source and kiosk_id: key -> (field, type, check, expected)
CAMERA_OPTIONS: dict[str, tuple[str, type, Any, str]] = {
    "detect_every": ("detect_every", int, lambda v: v >= 1, "an integer >= 1"),
    "scan_interval": ("scan_interval", int, lambda v: v >= 1, "an integer >= 1"),
    "min_face": ("min_face_px", float, lambda v: 0 < v < math.inf, "a positive number"),
    "still_rescan": ("still_rescan_s", float, lambda v: 0 <= v < math.inf, "a number >= 0"),
    "track_timeout": ("track_timeout_s", float, lambda v: 0 < v < math.inf, "a positive number"),
    "refresh": ("refresh_frames", int, lambda v: v >= 1, "an integer >= 1"),
    "folder_fps": ("folder_fps", float, lambda v: 0.001 <= v <= 1000, "frames per second between 0.001 and 1000"),
    "give_up_after": ("give_up_after_s", float, lambda v: v >= 0, "seconds >= 0 (0: never)"),
}


@dataclass(frozen=True)
class Camera:
    name: str  # unique in the run, safe in a file name
    source: str  # as open_source takes it (may hold credentials: show it through redact)
    kiosk_id: str  # the camera id on kiosk visits
    overrides: CameraOverrides = field(default_factory=CameraOverrides)


def name_for(source: str, index: int) -> str:
    """A readable default name: "cam0" for camera 0, a stream's host, a file's or
    folder's stem, else "stream<index>" (the source need not exist yet)."""
    if source.strip().isdigit():
        return f"cam{source.strip()}"
    if source.lower().startswith(STREAM_SCHEMES):
        host = re.sub(r"^[a-z]+://", "", redact(source), flags=re.IGNORECASE).split("/")[0].split("@")[-1]
        base = host.replace(":", "-")
    else:
        base = PurePath(source).stem or PurePath(source).name
    return safe_name(base) or f"stream{index}"


def safe_name(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-.")[:64]


def unique_names(names: Sequence[str]) -> list[str]:
    """The names with repeats numbered (door, door-2, ...), first come first kept."""
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def from_sources(sources: Sequence[str]) -> list[Camera]:
    """Cameras for `--source` given (perhaps several times) on the command line."""
    names = unique_names([name_for(s, i) for i, s in enumerate(sources)])
    return [Camera(name, source, name) for name, source in zip(names, sources)]


def load_cameras(path: Path) -> list[Camera]:
    """The cameras of a TOML file (see the module's docstring); UserError naming the problem."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"cameras file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read cameras file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"cameras file {path} is not valid TOML: {exc}") from None
    return cameras_from_tables(data, str(path), Path(path).parent)


def cameras_from_tables(data: Mapping[str, Any], where: str, base: Path = Path(".")) -> list[Camera]:
    """Cameras from parsed TOML; relative file and folder sources are read from `base`
    (the cameras file's folder), so the file works from any working directory."""
    extra = set(data) - {"camera"}
    if extra:
        raise UserError(f"{where}: unknown top-level key(s) {', '.join(sorted(extra))}; list cameras as [[camera]] tables")
    tables = data.get("camera")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{where}: no cameras; list each as a [[camera]] table with a source")
    cameras = [camera_from_table(t, i, where, base) for i, t in enumerate(tables)]
    names = [c.name for c in cameras]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{where}: camera name(s) used twice: {', '.join(repeated)}")
    return cameras


def camera_from_table(table: Mapping[str, Any], index: int, where: str, base: Path = Path(".")) -> Camera:
    at = f"{where}: camera {index + 1}"
    known = {"name", "source", "kiosk_id", *CAMERA_OPTIONS}
    unknown = set(table) - known
    if unknown:
        raise UserError(f"{at}: unknown option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    source = table.get("source")
    if not isinstance(source, (str, int)) or isinstance(source, bool) or str(source).strip() == "":
        raise UserError(f"{at}: needs a source (a camera index, file, folder or stream URL)")
    source = relative_to(str(source), base)
    name = table["name"] if "name" in table else name_for(source, index)
    if not isinstance(name, str) or safe_name(name) != name or not name:
        raise UserError(f"{at}: name {name!r} must be letters, digits, '.', '_' or '-' (it names output files)")
    kiosk_id = table.get("kiosk_id", name)
    if not isinstance(kiosk_id, str) or not kiosk_id.strip():
        raise UserError(f"{at}: kiosk_id must be a non-empty string")
    values = {field_: _checked(table[key], kind, check, expected, f"{at}: {key}") for key, (field_, kind, check, expected) in CAMERA_OPTIONS.items() if key in table}
    return Camera(name, source, kiosk_id, CameraOverrides(**values))


def relative_to(source: str, base: Path) -> str:
    """A relative path read from `base`; camera indexes and URLs as they are."""
    if source.strip().isdigit() or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) or Path(source).is_absolute():
        return source
    return str(base / source)


def _checked(value: Any, kind: type, check: Any, expected: str, what: str) -> Any:
    # TOML gives int or float; bool is an int to Python and never meant as a number here
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok_type or not math.isfinite(value) or not check(value):
        raise UserError(f"{what} must be {expected}, got {value!r}")
    return kind(value)


def fill_template(path: Path, name: str) -> Path:
    """An output path for one camera: `{name}` replaced by its name."""
    return Path(str(path).replace(NAME_TEMPLATE, name))


def per_camera_paths(outputs: Mapping[str, Path | None], cameras: Sequence[Camera], shared: Sequence[str] = ("summary",)) -> dict[str, dict[str, Path]]:
    """Each camera's output paths by output name; with several cameras every output but
    the `shared` ones (one file for the whole run) must hold `{name}`, so that no two
    streams write one file."""
    several = len(cameras) > 1
    for output, path in outputs.items():
        if path is None:
            continue
        templated = NAME_TEMPLATE in str(path)
        if output in shared and templated:
            raise UserError(f"the {output} is one file for every stream: drop {NAME_TEMPLATE} from {path}")
        if several and output not in shared and not templated:
            raise UserError(f"with several sources the {output} path needs {NAME_TEMPLATE} (for example {_example(path)})")
    return {
        c.name: {o: fill_template(p, c.name) for o, p in outputs.items() if p is not None and o not in shared}
        for c in cameras
    }


def _example(path: Path) -> str:
    return str(path.with_name(f"{path.stem}-{NAME_TEMPLATE}{path.suffix}"))


def with_overrides(base: Any, overrides: CameraOverrides, mapping: Mapping[str, str]) -> Any:
    """`base` (an options dataclass) with the overrides that `mapping` (override field ->
    options field) routes to it and that the camera sets."""
    changes = {target: getattr(overrides, source) for source, target in mapping.items() if getattr(overrides, source) is not None}
    return replace(base, **changes) if changes else base
