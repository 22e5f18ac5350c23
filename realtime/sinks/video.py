"""The annotated video: every frame as the overlay shows it, at the source's rate and size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .base import ShownFrame
from .writers import VideoFile, check_video_path

if TYPE_CHECKING:
    from ..analyzer import TrackSummary
    from ..sources import SourceInfo
    from ..summary import RunSummary


class VideoSink:
    def __init__(self, path: Path) -> None:
        self.path = check_video_path(Path(path))
        self._file: VideoFile | None = None

    def open(self, info: SourceInfo) -> None:
        self._file = VideoFile(self.path, info.fps, (info.width, info.height))

    def on_frame(self, shown: ShownFrame) -> None:
        assert self._file is not None, "opened before the first frame"
        self._file.write(shown.annotated())

    def on_people_finished(self, people: Sequence[TrackSummary], at_end: bool) -> None:
        pass

    def close(self, summary: RunSummary) -> None:
        if self._file is not None:
            self._file.close()  # writes the index and reads the file back
