"""What a run did, as one typed record: written as the `--summary` JSON, shown at exit."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .analyzer import TrackSummary


@dataclass(frozen=True)
class ModelInfo:
    file: str
    name: str
    version: str


@dataclass(frozen=True)
class LiveSummary:
    """What a camera or stream went through (files and folders have none of this)."""

    dropped_frames: int
    reconnects: int
    gaps: list[tuple[float, float]]  # (start, end) seconds since the source started


@dataclass(frozen=True)
class RunSummary:
    source: str
    source_kind: str
    frames: int
    duration: float  # seconds of video processed
    processing_seconds: float
    processing_fps: float | None
    tracks: int  # people who got an end (all of them once the run is over)
    faces_inferred: int
    execution_providers: list[str]
    model: ModelInfo
    detector: str
    detect_every: int
    interrupted: bool
    people: list[TrackSummary] = field(default_factory=list)
    error: str | None = None  # why the run failed; None when it did not
    live: LiveSummary | None = None

    def failed(self, error: str) -> "RunSummary":
        """This summary with the run's first error (later ones are consequences)."""
        return self if self.error is not None else replace(self, error=error)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "source_kind": self.source_kind,
            "frames": self.frames,
            "duration": self.duration,
            "processing_seconds": self.processing_seconds,
            "processing_fps": self.processing_fps,
            "tracks": self.tracks,
            "faces_inferred": self.faces_inferred,
            "execution_providers": self.execution_providers,
            "model": {"file": self.model.file, "name": self.model.name, "version": self.model.version},
            "detector": self.detector,
            "detect_every": self.detect_every,
            "interrupted": self.interrupted,
            "people": [p.to_event() for p in self.people],
        }
        if self.live is not None:
            data.update(dropped_frames=self.live.dropped_frames, reconnects=self.live.reconnects, gaps=self.live.gaps)
        if self.error is not None:
            data["error"] = self.error
        return data
