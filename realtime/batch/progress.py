"""The live display of a batch run: files done and video hours done, with an ETA, moved on
by each worker's answer: video hours per file or chunk answered, files when a file is
settled (a long file in chunks: when its last chunk is back and merged)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class AmountColumn(ProgressColumn):
    """"3/10 files" or "0.12/0.50 h" by the task's `unit` field."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "h":
            return Text(f"{task.completed / 3600:.2f}/{(task.total or 0) / 3600:.2f} h")
        return Text(f"{task.completed:.0f}/{task.total or 0:.0f} files")


class BatchProgress:
    def __init__(self, console: Console, shown: bool, files: int, video_seconds: float) -> None:
        self.console, self.shown = console, shown
        self.files, self.video_seconds = files, video_seconds
        self._progress: Progress | None = None
        self._tasks: tuple[Any, Any] | None = None

    def __enter__(self) -> BatchProgress:
        if self.shown:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), AmountColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self._progress.__enter__()
            files = self._progress.add_task("files", total=self.files, unit="files")
            video = self._progress.add_task("video", total=max(self.video_seconds, 1e-9), unit="h")
            self._tasks = (files, video)
        return self

    def advance(self, video_seconds: float, files: int = 1) -> None:
        """`files` files settled, `video_seconds` of video answered (a file's or a chunk's)."""
        if self._progress is not None and self._tasks is not None:
            files_task, video = self._tasks
            if files:
                self._progress.advance(files_task, files)
            if video_seconds:
                self._progress.advance(video, video_seconds)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
