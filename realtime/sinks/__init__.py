"""Outputs: everything a run writes or shows is a `Sink` (base.py).

`OUTPUTS` lists the file outputs the command line offers, one entry each; adding an
output is one new module here with a Sink class and one entry in `OUTPUTS` (run_camera.py
builds its options and the sinks from this table). The window (`WindowSink`) and the
kiosk store are sinks too, added by their callers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..files import write_text_atomic
from .base import ShownFrame, Sink, StopRun
from .jsonlines import EventsSink, FramesSink, face_record, frame_record
from .people_csv import PeopleCsvSink
from .summary import SummarySink
from .video import VideoSink
from .window import TiledWindow, WindowSink, WindowSlot, tile_views
from .writers import JsonLinesFile, VideoFile, check_outputs, check_video_path, check_writable, write_json_atomic


@dataclass(frozen=True)
class OutputKind:
    name: str  # key in `RunOptions.outputs`
    option: str  # the command-line option
    help: str
    make: Callable[[Path], Sink]


# in the order the sinks open; they close in reverse, so the summary, closed last,
# records any failure of the others
OUTPUTS: tuple[OutputKind, ...] = (
    OutputKind("summary", "--summary", "JSON summary of the run, written at exit", SummarySink),
    OutputKind("video", "--output", "write the annotated video here (.mp4, .avi, .mkv, .mov)", VideoSink),
    OutputKind("events", "--events", "JSON lines: one record per person, written as the person leaves", EventsSink),
    OutputKind("frames", "--frames", "JSON lines: one record per frame with every face shown", FramesSink),
    OutputKind("people_csv", "--people-csv", "CSV: one row per person, written as the person leaves", PeopleCsvSink),
)
VIDEO_OPTION = "--output"


def build_sinks(outputs: Mapping[str, Path | None]) -> list[Sink]:
    """The file sinks for `outputs` (OutputKind.name -> path), in opening order."""
    unknown = set(outputs) - {kind.name for kind in OUTPUTS}
    if unknown:
        raise ValueError(f"unknown outputs: {', '.join(sorted(unknown))}")
    return [kind.make(Path(path)) for kind in OUTPUTS if (path := outputs.get(kind.name)) is not None]


__all__ = [
    "OUTPUTS", "VIDEO_OPTION", "EventsSink", "FramesSink", "JsonLinesFile", "OutputKind", "PeopleCsvSink",
    "ShownFrame", "Sink", "StopRun", "SummarySink", "TiledWindow", "VideoFile", "VideoSink", "WindowSink", "WindowSlot",
    "build_sinks", "tile_views",
    "check_outputs", "check_video_path", "check_writable", "face_record", "frame_record", "write_json_atomic",
    "write_text_atomic",
]
