#!/usr/bin/env python3
"""Live age and gender analytics on a camera, a video file, an image folder or a stream.

    python run_camera.py --source 0
    python run_camera.py --source clip.mp4 --no-display --output out.mp4 --events events.jsonl
    python run_camera.py --source a.mp4 --source rtsp://cam2/live --events 'events-{name}.jsonl'
    python run_camera.py --sources cameras.toml --summary run.json

Command line only: parse options, build an analyzer, pump frames, map failures to exit
codes (0 done, 2 bad input or an output that cannot be written, 3 a live source lost for
good, 130 stopped by a signal, 1 unexpected error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.analyzer import Analyzer, AnalyzerOptions
    from realtime.cameras import Camera
    from realtime.kiosk.session import KioskRun
    from realtime.sources import SourceInfo

from realtime.analysis_args import add_analysis_arguments, analyzer_options, detector_options
from realtime.cli import OneLineParser, checked_number, positive_int, run_main, silence_native_logs

silence_native_logs()  # before OpenCV, MediaPipe and TensorFlow load


# an image folder's frame rate: frame times are index / rate, so a tiny rate made them
# infinite; the top is the highest rate a video file's own header is believed (sources)
FOLDER_FPS_RANGE = (0.001, 1000.0)


def folder_fps(text: str) -> float:
    low, high = FOLDER_FPS_RANGE
    return checked_number(text, float, lambda v: low <= v <= high, f"frames per second between {low:g} and {high:g}")


# a script on a dead camera or stream ends rather than waiting forever; a kiosk never gives up
DEFAULT_GIVE_UP_AFTER_S = 60.0


def give_up_seconds(text: str) -> float:
    """--give-up-after: seconds, or 0 / never for no limit (infinity)."""
    if text.strip().lower() == "never":
        return float("inf")
    value = checked_number(text, float, lambda v: v >= 0, "seconds, 0 or never")  # NaN and negatives fail
    return float("inf") if value == 0 else value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="run_camera.py",
        description="Find, track and estimate the apparent age and gender of every face in a video. "
        "Estimates are statistical guesses from appearance; the tool never identifies anyone.",
    )
    p.add_argument("--source", action="append", metavar="SOURCE", help="camera index (default 0), video file, image folder or stream URL (rtsp://, http://); repeat for several streams in one process (file outputs then need {name} in their path)")
    p.add_argument("--sources", type=Path, metavar="TOML", help="cameras file: one [[camera]] table per stream with name, source and per-camera options (see README)")
    p.add_argument("--no-display", action="store_true", help="never open a window")
    from realtime.sinks import OUTPUTS

    for kind in OUTPUTS:
        p.add_argument(kind.option, type=Path, metavar="FILE", help=kind.help)
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    p.add_argument("--give-up-after", type=give_up_seconds, metavar="SECONDS", help="a camera or stream down this long ends the run (exit 3, outputs complete); 0 or never: keep retrying (default: 60, never with --kiosk)")
    g = add_analysis_arguments(p)
    g.add_argument("--folder-fps", type=folder_fps, default=25.0, help="frame rate assigned to an image folder (default 25)")
    g.add_argument("--quiet", action="store_true", help="no progress display")
    from realtime.kiosk.session import add_arguments as add_kiosk_arguments

    add_kiosk_arguments(p)
    return p


# options only the kiosk reads, and those only its dashboard reads: given without the
# mode they belong to, they would be silently ignored
KIOSK_ONLY = (
    "data_dir", "min_dwell", "min_glance", "retention_days", "age_brackets",
    "dashboard", "dashboard_host", "dashboard_port", "dashboard_token", "dashboard_allow_host",
    "central", "kiosk_id", "site", "location",
)
DASHBOARD_ONLY = ("dashboard_host", "dashboard_port", "dashboard_token", "dashboard_allow_host")


def given_options(args: argparse.Namespace, dests: tuple[str, ...]) -> list[str]:
    """The flags among `dests` set to something other than their default."""
    defaults = build_parser()
    return [f"--{d.replace('_', '-')}" for d in dests if hasattr(args, d) and getattr(args, d) != defaults.get_default(d)]


def check_option_combinations(args: argparse.Namespace) -> None:
    """Refuse options that need another option, or that the detector and tracker cannot
    work with, before a source, model or output is opened (UserError, exit 2).

    The ranges are the libraries' own: their option objects are built here and refuse.
    """
    from realtime.errors import UserError

    if not args.kiosk:
        needed, stray = "--kiosk", given_options(args, KIOSK_ONLY)
    elif not args.dashboard:
        needed, stray = "--dashboard", given_options(args, DASHBOARD_ONLY)
    else:
        needed, stray = "", []
    if stray:
        raise UserError(f"{', '.join(stray)} {'needs' if len(stray) == 1 else 'need'} {needed}")
    from realtime.analysis_args import check_analysis_options

    check_analysis_options(args)


def main(argv: list[str] | None = None) -> int:
    def work(args: argparse.Namespace, console: Any) -> int:
        check_option_combinations(args)
        return run(args, console)

    return run_main(build_parser, argv, work)


def output_paths(args: argparse.Namespace) -> dict[str, Path | None]:
    """Each file output's path by its `realtime.sinks.OUTPUTS` name (None when not asked for)."""
    from realtime.sinks import OUTPUTS

    return {kind.name: getattr(args, kind.option.lstrip("-").replace("-", "_")) for kind in OUTPUTS}


def cameras_of(args: argparse.Namespace) -> "list[Camera]":
    """The streams asked for: the cameras file, or each --source (camera 0 by default)."""
    from realtime.cameras import from_sources, load_cameras
    from realtime.errors import UserError

    if args.sources is not None:
        if args.source:
            raise UserError("give --source or --sources, not both")
        return load_cameras(args.sources)
    return from_sources(args.source or ["0"])


def give_up_for(args: argparse.Namespace, kiosk: bool, camera: "Camera | None" = None) -> float | None:
    """Seconds a live source may stay down: a kiosk keeps retrying unless told otherwise,
    a one-off run gives up; a camera's own setting (0: never) wins."""
    own = camera.overrides.give_up_after_s if camera is not None else None
    if own is not None:
        return float("inf") if own == 0 else own
    return args.give_up_after if kiosk or args.give_up_after is not None else DEFAULT_GIVE_UP_AFTER_S


def run(args: argparse.Namespace, console: Any) -> int:
    cameras = cameras_of(args)
    if len(cameras) > 1 or args.sources is not None:
        return run_streams(args, cameras, console)
    return run_one(args, cameras[0], console)


def run_one(args: argparse.Namespace, camera: "Camera", console: Any) -> int:
    from contextlib import ExitStack

    from realtime.analyzer import Analyzer
    from realtime.cameras import per_camera_paths
    from realtime.kiosk.session import KioskRun, options_from_args
    from realtime.kiosk.store import store_file
    from realtime.redact import redact
    from realtime.runner import RunOptions, console_logging, people_table, run as run_frames
    from realtime.sinks import OUTPUTS, check_outputs
    from realtime.sources import open_source

    kiosk = options_from_args(args) if args.kiosk else None
    spec = camera.source
    outputs = {**output_paths(args), **per_camera_paths(output_paths(args), [camera])[camera.name]}
    inputs = {"--model": args.model, "--data-dir": store_file(kiosk.data_dir) if kiosk else None}
    check_outputs(spec, {kind.option: outputs[kind.name] for kind in OUTPUTS}, inputs)
    with ExitStack() as stack:
        stack.enter_context(console_logging(console))  # warnings while opening, too
        kiosk_run = stack.enter_context(KioskRun.open(kiosk, redact(spec), console)) if kiosk else None
        source = stack.enter_context(open_source(spec, folder_fps=args.folder_fps, give_up_after_s=give_up_for(args, kiosk is not None)))
        analyzer = stack.enter_context(Analyzer.create_from_options(analyzer_options(args, source.info.fps)))
        console.print(banner(source.info, analyzer, args.model, kiosk_run), soft_wrap=True)
        options = RunOptions(
            outputs={name: path for name, path in outputs.items() if path is not None},
            display=not args.no_display and kiosk is None,  # a kiosk's screen belongs to the signage
            max_frames=args.max_frames,
            progress=not args.quiet,
            keep_people=kiosk is None,  # a kiosk runs for days: its people live in the store
        )
        sinks = [kiosk_run.session_for(source)] if kiosk_run else []
        summary = run_frames(source, analyzer, options, console=console, sinks=sinks)
        if kiosk_run:
            kiosk_run.ended(summary)
    if kiosk_run:
        console.print(kiosk_run.result_line(summary), markup=False, soft_wrap=True)
        forwarded = kiosk_run.forwarding_line()
        if forwarded:
            console.print(forwarded, markup=False, soft_wrap=True)
    else:
        if not args.quiet:
            console.print(people_table(summary.people))
        state = "interrupted" if summary.interrupted else "done"
        console.print(f"{state}: {summary.frames} frames at {summary.processing_fps} fps, {summary.tracks} people")
    # outputs are complete either way; the exit status tells a script the run was cut short
    return 130 if summary.interrupted else 0


def camera_analyzer_options(args: argparse.Namespace, camera: "Camera", fps: float) -> "AnalyzerOptions":
    """The command line's analyzer options with the camera's own settings over them."""
    from dataclasses import replace

    from realtime.cameras import with_overrides

    base = analyzer_options(args, fps)
    o = camera.overrides
    return replace(
        with_overrides(base, o, {"detect_every": "detect_every", "scan_interval": "scan_interval"}),
        detector=with_overrides(base.detector, o, {"min_face_px": "min_face_px", "still_rescan_s": "still_rescan_s"}),
        tracker=with_overrides(base.tracker, o, {"track_timeout_s": "timeout_s"}),
        schedule=with_overrides(base.schedule, o, {"refresh_frames": "refresh_frames"}),
    )


def run_streams(args: argparse.Namespace, cameras: "list[Camera]", console: Any) -> int:
    """Several streams in one process, sharing one detector engine and one model."""
    from contextlib import ExitStack

    from realtime.cameras import per_camera_paths
    from realtime.kiosk.session import KioskRun, options_from_args
    from realtime.kiosk.store import store_file
    from realtime.runner import console_logging
    from realtime.sinks import OUTPUTS, TiledWindow, build_sinks, check_outputs, write_json_atomic
    from realtime.sources import open_source
    from realtime.streams import SharedEngines, Stream, StreamsOptions, exit_code, run_streams as run_all, streams_table

    kiosk = options_from_args(args) if args.kiosk else None
    outputs = output_paths(args)
    per_camera = per_camera_paths(outputs, cameras)
    option = {kind.name: kind.option for kind in OUTPUTS}
    labelled = {f"{option[o]} ({c.name})": p for c in cameras for o, p in per_camera[c.name].items()}
    inputs = {"--model": args.model, "--data-dir": store_file(kiosk.data_dir) if kiosk else None, "--sources": args.sources}
    check_outputs([c.source for c in cameras], {**labelled, "--summary": outputs["summary"]}, inputs)
    display = not args.no_display and kiosk is None
    with ExitStack() as stack:
        stack.enter_context(console_logging(console))
        kiosk_run = stack.enter_context(KioskRun.open(kiosk, ", ".join(c.name for c in cameras), console)) if kiosk else None
        engines = stack.enter_context(SharedEngines.create(detector_options(args), args.model, args.device, len(cameras)))
        window = TiledWindow([c.name for c in cameras]) if display else None
        streams = []
        for camera in cameras:
            source = stack.enter_context(open_source(camera.source, folder_fps=camera.overrides.folder_fps or args.folder_fps, give_up_after_s=give_up_for(args, kiosk is not None, camera)))
            analyzer = stack.enter_context(engines.analyzer(camera_analyzer_options(args, camera, source.info.fps)))
            sinks = build_sinks(per_camera[camera.name])
            sinks += [window.slot(camera.name)] if window else []
            sinks += [kiosk_run.session_for(source, camera=camera.kiosk_id)] if kiosk_run else []
            streams.append(Stream(camera.name, source, analyzer, sinks, max_frames=args.max_frames))
            console.print(f"stream {camera.name}: {source.info.kind} {source.info.name} {source.info.width}x{source.info.height} @ {source.info.fps:g} fps", soft_wrap=True)
        console.print(f"{len(streams)} streams | model: {engines.model.metadata.name} ({args.model.name}) | providers: {', '.join(engines.model.providers)} | detector: {engines.engine.name}, shared", soft_wrap=True)
        if window:
            window.open()
            stack.callback(window.close)
        # the window and the kiosk's store are used from one thread: then one loop for all
        threads = window is None and kiosk_run is None
        options = StreamsOptions(progress=not args.quiet, keep_people=kiosk is None, after_tick=window.show if window else None, threads=threads)
        summary = run_all(streams, engines, options, console)
        if outputs["summary"] is not None:
            write_json_atomic(outputs["summary"], summary.to_dict())
        if kiosk_run:
            kiosk_run.ended(summary)
    console.print(streams_table(streams, f"{len(streams)} streams: {summary.frames} frames at {summary.aggregate_fps} fps together"))
    for name, error in summary.failures:
        console.print(f"stream {name} failed: {error}", markup=False, soft_wrap=True)
    if kiosk_run:
        console.print(kiosk_run.result_line(summary), markup=False, soft_wrap=True)
        forwarded = kiosk_run.forwarding_line()
        if forwarded:
            console.print(forwarded, markup=False, soft_wrap=True)
    return exit_code(summary, streams)


def banner(info: "SourceInfo", analyzer: "Analyzer", model: Path, kiosk_run: "KioskRun | None") -> str:
    """The line printed once everything has opened: what runs, on what."""
    where = f"{info.kind} {info.name} {info.width}x{info.height} @ {info.fps:g} fps"
    providers = ", ".join(analyzer.providers)
    if kiosk_run is not None:
        return f"kiosk: {where} | store {kiosk_run.store.path} (run {kiosk_run.store.run_id}) | providers: {providers}"
    every = "frame" if analyzer.detect_every == 1 else f"{analyzer.detect_every} frames"
    return f"source: {where} | model: {analyzer.model.metadata.name} ({model.name}) | providers: {providers} | detector: every {every}"


if __name__ == "__main__":
    sys.exit(main())
