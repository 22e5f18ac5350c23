"""The command-line options that shape the analysis, shared by every command that runs it.

    from realtime.analysis_args import add_analysis_arguments, analyzer_options, check_analysis_options

    add_analysis_arguments(parser)              # --model, --device, --detector..., --min-face
    args = parser.parse_args()
    check_analysis_options(args)                # UserError (exit 2) before anything loads
    options = analyzer_options(args, fps)       # the library's AnalyzerOptions

run_camera.py and `python -m realtime.batch` both use it, so an option added here
reaches both. This is command-line code: the libraries take the option dataclasses.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import checked_number, non_negative_float, positive_float, positive_int, probability
from .smoothing import SmoothingOptions

if TYPE_CHECKING:
    from .analyzer import AnalyzerOptions
    from .detection import DetectorOptions

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def add_analysis_arguments(parser: argparse.ArgumentParser) -> "argparse._ArgumentGroup":
    """Adds the options; returns their "tuning" group, for a command's own tuning options."""
    from .paths import DEFAULT_MODEL

    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"age/gender ONNX model (default: {DEFAULT_MODEL.name})")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="execution provider (auto: TensorRT, CUDA, then CPU)")
    g = parser.add_argument_group("tuning")
    g.add_argument("--detector", choices=("full", "short"), default="full", help="BlazeFace full-range (default; small and distant faces) or short-range (faces within 2 m)")
    g.add_argument("--detector-engine", choices=("auto", "mediapipe", "onnx"), default="auto", help="what runs BlazeFace: MediaPipe or onnxruntime (the same networks; many tiles and streams per run; CPU, CUDA, TensorRT); auto (default): onnx where the model runs on a GPU, MediaPipe on a CPU, as measured fastest on each")
    g.add_argument("--min-confidence", type=probability, default=0.5, help="detector score threshold (default 0.5)")
    g.add_argument("--gender-confidence", type=gender_confidence, default=SmoothingOptions.gender_threshold, metavar="P",
                   help="show a person's gender only once the model's calibrated confidence reaches P; below it the gender "
                        f"is reported as uncertain (default {SmoothingOptions.gender_threshold}; 0.5 always shows one)")
    g.add_argument("--track-timeout", type=positive_float, default=1.0, help="seconds without a detection before a person counts as gone (default 1)")
    g.add_argument("--refresh", type=positive_int, default=15, help="re-estimate each face at least every N frames (default 15)")
    g.add_argument("--scan-interval", type=positive_int, help="large frames: full tiled face scan spread over N frames (default: 0.3 s of video)")
    g.add_argument("--detect-every", type=positive_int, help="run the face detector on every Nth frame, moving boxes by their tracked velocity in between (default: as many frames as keep 15 detections a second; 1 at 25 fps, 2 at 30)")
    g.add_argument("--tile-size", type=positive_int, default=640, help="tile side for scanning large frames (default 640)")
    g.add_argument("--still-rescan", type=non_negative_float, default=2.0, metavar="S", help="large frames from a fixed camera: tiles where nothing changed are searched for new faces only every S seconds (default 2; 0 searches every tile every sweep)")
    g.add_argument("--min-face", type=positive_float, default=12.0, metavar="PX", help="frames up to 800 px: the smallest face to look for; where one detector pass cannot see it, the frame is also swept every 2 s in smaller tiles (default 12; faces under 20 px are tracked and counted, never estimated)")
    return g


def gender_confidence(text: str) -> float:
    return checked_number(text, float, lambda v: 0.5 <= v < 1, "a confidence from 0.5 up to (not including) 1")


def check_analysis_options(args: argparse.Namespace) -> None:
    """Refuse what the detector and tracker cannot work with, before a source, model or
    output is opened (UserError, exit 2). The ranges are the libraries' own: their option
    objects are built here and refuse."""
    from .detection import check_options
    from .tracking import TrackerOptions

    TrackerOptions(timeout_s=args.track_timeout)
    # the tile size is checked against the detector network's input, read from its file
    check_options(detector_options(args))


def detector_options(args: argparse.Namespace) -> "DetectorOptions":
    from .detection import DetectorOptions, resolve_engine

    return DetectorOptions(
        engine=resolve_engine(args.detector_engine, args.device),
        device=args.device,
        model=args.detector,
        min_confidence=args.min_confidence,
        tile_size=args.tile_size,
        min_face_px=args.min_face,
        still_rescan_s=args.still_rescan,
    )


def analyzer_options(args: argparse.Namespace, fps: float) -> "AnalyzerOptions":
    from .analyzer import AnalyzerOptions
    from .scheduling import ScheduleOptions
    from .tracking import TrackerOptions

    return AnalyzerOptions(
        model_path=args.model,
        device=args.device,
        fps=fps,
        detector=detector_options(args),
        tracker=TrackerOptions(timeout_s=args.track_timeout),
        schedule=ScheduleOptions(refresh_frames=args.refresh),
        smoothing=SmoothingOptions(gender_threshold=args.gender_confidence),
        scan_interval=args.scan_interval,
        detect_every=args.detect_every,
    )
