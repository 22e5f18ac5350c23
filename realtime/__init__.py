"""Real-time age and gender analytics for video: the public API.

    import realtime
    with realtime.open_source("clip.mp4") as source, realtime.Analyzer.create_from_options(
        realtime.AnalyzerOptions(fps=source.info.fps)
    ) as analyzer:
        summary = realtime.run(source, analyzer, realtime.RunOptions(outputs={"events": "people.jsonl"}))

Names are imported on first use, so that `import realtime` (and the command line's
start-up, which installs its signal handlers first) does not load MediaPipe and
onnxruntime before they are needed. docs/architecture.md maps the modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Analyzer": "analyzer", "AnalyzerOptions": "analyzer", "FaceResult": "analyzer",
    "FrameResult": "analyzer", "TrackSummary": "analyzer",
    "DetectorOptions": "detection", "FaceDetector": "detection",
    "AgeGenderModel": "model", "ModelMetadata": "metadata",
    "TrackerOptions": "tracking", "ScheduleOptions": "scheduling",
    "Frame": "sources", "FrameSource": "sources", "SourceInfo": "sources", "open_source": "sources",
    "RunOptions": "runner", "run": "runner", "RunSummary": "summary",
    "Sink": "sinks", "ShownFrame": "sinks", "StopRun": "sinks", "OUTPUTS": "sinks",
    "UserError": "errors", "SourceError": "errors", "ModelError": "errors", "OutputError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'realtime' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


if TYPE_CHECKING:
    from .analyzer import Analyzer, AnalyzerOptions, FaceResult, FrameResult, TrackSummary
    from .detection import DetectorOptions, FaceDetector
    from .errors import ModelError, OutputError, SourceError, UserError
    from .metadata import ModelMetadata
    from .model import AgeGenderModel
    from .runner import RunOptions, run
    from .scheduling import ScheduleOptions
    from .sinks import OUTPUTS, ShownFrame, Sink, StopRun
    from .sources import Frame, FrameSource, SourceInfo, open_source
    from .summary import RunSummary
    from .tracking import TrackerOptions
