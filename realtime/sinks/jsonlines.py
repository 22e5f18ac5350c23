"""JSON lines: one record per person as they leave (events), one per frame (frames)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .base import ShownFrame
from .writers import JsonLinesFile, check_writable

if TYPE_CHECKING:
    from ..analyzer import FaceResult, FrameResult, TrackSummary
    from ..sources import SourceInfo
    from ..summary import RunSummary


def face_record(face: FaceResult) -> dict[str, Any]:
    # every smoothed attribute, as shown (smoothing.Estimates): a new attribute appears here by itself
    return {"track_id": face.track_id, "box": [round(v, 1) for v in face.box], **face.estimates.record()}


def frame_record(result: FrameResult) -> dict[str, Any]:
    return {"frame": result.frame_index, "time": round(result.time, 3), "faces": [face_record(f) for f in result.faces]}


class _JsonLines:
    def __init__(self, path: Path) -> None:
        self.path = check_writable(Path(path))
        self._file: JsonLinesFile | None = None

    def open(self, info: SourceInfo) -> None:
        self._file = JsonLinesFile(self.path)

    def on_frame(self, shown: ShownFrame) -> None:
        pass

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        if self._file is not None:
            self._file.close()

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None, "opened before the first record"
        self._file.write(record)


class EventsSink(_JsonLines):
    """`--events`: a person's record as they leave, and everyone's at the end."""

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        for person in people:
            self._write(person.to_event())


class FramesSink(_JsonLines):
    """`--frames`: every frame with every face as shown."""

    def on_frame(self, shown: ShownFrame) -> None:
        self._write(frame_record(shown.result))
