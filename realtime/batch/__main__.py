"""python -m realtime.batch INPUT... --out DIR: analyse every video of an archive on Ray.

Command line only: parse, check, call `runner.run_batch`, map the outcome to an exit
status: 0 every file done (or skipped as done before), 4 some files failed (the others
are done; the manifest names each failure), 2 bad usage or an unusable --out, 130
stopped by a signal (files in flight stay pending for the next run), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from realtime.cli import (
    OneLineParser,
    checked_number,
    positive_int,
    run_main,
    silence_native_logs,
)

if TYPE_CHECKING:
    from rich.console import Console

    from .results import BatchReport
    from .runner import BatchOptions

silence_native_logs()  # before OpenCV and MediaPipe load

EXIT_SOME_FAILED = 4


def gpu_share(text: str) -> float:
    return checked_number(text, float, lambda v: 0 <= v <= 64, "a number of GPUs between 0 and 64 (fractions share one)")


def chunk_minutes(text: str) -> float:
    return checked_number(text, float, lambda v: 0 < v < 1e9, "a positive number of minutes")


def overlap_seconds(text: str) -> float:
    return checked_number(text, float, lambda v: 0 <= v < 1e9, "zero or more seconds")


def build_parser() -> argparse.ArgumentParser:
    from realtime.analysis_args import add_analysis_arguments

    p = OneLineParser(
        prog="python -m realtime.batch",
        description="Analyse every video of an archive on Ray: files, folders (recursive) or lists of paths "
        "(@list or a .txt file, one path per line). Results go to --out: per file the events and summary, for the "
        "whole run people.parquet, people.csv and manifest.json. A rerun with the same --out resumes.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="video file, folder, or list of paths (@FILE or FILE.txt)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="results folder (created; new, empty, or a previous run's); on a cluster, storage every node sees")
    p.add_argument("--address", metavar="ADDR", help="an existing Ray cluster: auto, host:port or ray://host:10001 (default: start a local Ray)")
    p.add_argument("--workers", type=positive_int, help="worker actors (default: as many as the CPUs, or GPUs, allow)")
    p.add_argument("--threads-per-worker", type=positive_int, default=1, metavar="T", help="CPU threads (and Ray CPUs) per worker (default 1)")
    p.add_argument("--gpus-per-worker", type=gpu_share, default=0.0, metavar="F", help="GPUs per worker, fractions share one (e.g. 0.25); --device auto then means cuda")
    p.add_argument("--chunk-minutes", type=chunk_minutes, metavar="M", help="cut files longer than M minutes into chunks that any worker "
                   "takes, merged back per file (default: about 4 chunks per worker over the run's video, 2 to 10 minutes)")
    p.add_argument("--chunk-overlap", type=overlap_seconds, metavar="S", help="seconds neighbouring chunks share, where a person crossing "
                   "the boundary is recognised as one (default 4; at most half a chunk)")
    p.add_argument("--video", action="store_true", help="also write each file's annotated video (annotated.mp4); every file then "
                   "runs whole on one worker, however long (no chunks)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    add_analysis_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser, argv, run)


def run(args: argparse.Namespace, console: Console) -> int:
    from realtime.analysis_args import check_analysis_options
    from realtime.errors import UserError

    from .inputs import collect_inputs
    from .layout import check_out_dir

    if not args.inputs:
        raise UserError("no inputs: give video files, folders or lists of paths")
    out = Path(args.out).absolute()
    inputs = collect_inputs(args.inputs, skip=out)
    if not inputs:
        raise UserError(f"no video files in {', '.join(args.inputs)} (extensions: mp4, avi, mkv, mov, m4v, webm, mpg, mpeg, ts, gif)")
    check_out_dir(out, inputs)
    if args.gpus_per_worker > 0 and args.device == "auto":
        args.device = "cuda"  # a worker given a GPU share runs on it
    check_analysis_options(args)
    check_chunk_options(args)
    if not args.model.is_file():
        raise UserError(f"model file not found: {args.model}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError('Ray is not installed: pip install -e ".[cpu,cluster]"') from None
    from .runner import run_batch

    return finish(run_batch(inputs, batch_options(args, out), console), console)


def check_chunk_options(args: argparse.Namespace) -> None:
    from .chunks import DEFAULT_OVERLAP_S, MIN_CHUNK_S, check_chunking

    overlap = DEFAULT_OVERLAP_S if args.chunk_overlap is None else args.chunk_overlap
    chunk = args.chunk_minutes * 60 if args.chunk_minutes is not None else MIN_CHUNK_S  # the default's shortest
    check_chunking(chunk, overlap)


def batch_options(args: argparse.Namespace, out: Path) -> BatchOptions:
    from dataclasses import replace

    from realtime.analysis_args import analyzer_options

    from .runner import BatchOptions
    from .worker import WorkerOptions

    # fps is each file's own: the workers replace this placeholder per file
    analyzer = analyzer_options(args, 25.0)
    analyzer = replace(analyzer, model_path=Path(analyzer.model_path).absolute())
    worker = WorkerOptions(analyzer=analyzer, threads=args.threads_per_worker, video=args.video)
    chunking = {"chunk_seconds": args.chunk_minutes * 60 if args.chunk_minutes is not None else None}
    if args.chunk_overlap is not None:
        chunking["overlap_seconds"] = args.chunk_overlap
    return BatchOptions(out=out, worker=worker, address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                        progress=not args.quiet, **chunking)


def finish(report: BatchReport, console: Console) -> int:
    from .results import report_table

    console.print(report_table(report))
    for path, error in report.failures:
        console.print(f"failed: {path}: {error}", markup=False, soft_wrap=True)
    if report.interrupted:
        console.print(f"interrupted: {report.unfinished} files in flight left for the next run", markup=False)
        from realtime.shutdown import EXIT_INTERRUPTED

        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
