"""Many streams in one process against one process per stream, measured side by side.

    python -m tooling.bench_streams --streams 4 --seconds 20 --json /tmp/streams.json

Generates N 640x480 H.264 scenes with people (tooling.scenes, different seeds; kept
in --videos-dir and reused), then runs, interleaved and repeated so that a shared,
noisy machine drifts evenly over every configuration:

  processes    N `run_camera.py --source one.mp4` processes started at once
  one process  one `run_camera.py --source a.mp4 --source b.mp4 ...`

for every stream count of --counts (1 is one process with one source). For each run:
aggregate fps two ways, wall (launch of the first process to exit of the last, so
model loading included) and processing (the summaries' own clocks: the steady state
a long-running deployment sees); the peak resident memory of every process (psutil,
sampled every 50 ms, children included; on Linux also the kernel's high-water mark)
and the CPU seconds it used. Targets (issue 11): one process >= 1.5x the aggregate fps
of N processes, and <= 60 MB for every stream past the first.

Arguments after `--` go to every run_camera.py, e.g. `-- --detector-engine onnx`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from realtime.paths import ROOT
from tooling.bench import load_average, machine_info, versions

Mode = Literal["processes", "one_process"]
MODES: tuple[Mode, ...] = ("processes", "one_process")
TARGET_FPS_RATIO = 1.5
TARGET_MB_PER_STREAM = 60.0
SAMPLE_S = 0.05
RUN_CAMERA = ROOT / "run_camera.py"


# ----------------------------------------------------------------- the measurements


@dataclass(frozen=True)
class RunResult:
    """One run of one configuration."""

    mode: Mode
    streams: int
    repeat: int
    frames: int
    wall_s: float  # launch of the first process to exit of the last
    processing_s: float  # the window in which frames were processed, from the summaries
    peak_rss_mb: tuple[float, ...]  # per process
    cpu_s: float  # user + system, all processes

    @property
    def fps_wall(self) -> float:
        return self.frames / self.wall_s

    @property
    def fps_processing(self) -> float:
        return self.frames / self.processing_s

    @property
    def rss_total_mb(self) -> float:
        return sum(self.peak_rss_mb)

    @property
    def cpu_util(self) -> float:
        """Cores kept busy on average over the wall time."""
        return self.cpu_s / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        extra = {k: round(getattr(self, k), 2) for k in ("fps_wall", "fps_processing", "rss_total_mb", "cpu_util")}
        return {**asdict(self), "peak_rss_mb": list(self.peak_rss_mb), **extra}


def processing_window(exits: Sequence[tuple[float, float]]) -> float:
    """Seconds from the first process starting to process to the last one ending.

    exits: (exit time, processing seconds from its summary) per process, on one clock.
    Processes start processing at different moments (each loads its own models), so
    neither the longest nor the sum of their processing times is the shared window.
    """
    return max(t for t, _ in exits) - min(t - s for t, s in exits)


def summary_frames_and_seconds(summary: dict[str, Any]) -> tuple[int, float]:
    """Frames and processing seconds of a run_camera summary, one stream or several."""
    if "streams" in summary:
        return int(summary["frames"]), float(summary["wall_seconds"])
    return int(summary["frames"]), float(summary["processing_seconds"])


def config_key(mode: Mode, streams: int) -> str:
    return f"{mode}/{streams}"


def summarize(runs: Sequence[RunResult]) -> dict[str, Any]:
    """The repeats of one configuration: medians, and the best fps."""
    def med(values: Sequence[float]) -> float:
        return round(statistics.median(values), 2)

    return {
        "mode": runs[0].mode,
        "streams": runs[0].streams,
        "repeats": len(runs),
        "frames": runs[0].frames,
        "fps_wall": med([r.fps_wall for r in runs]),
        "fps_wall_best": round(max(r.fps_wall for r in runs), 2),
        "fps_processing": med([r.fps_processing for r in runs]),
        "fps_processing_best": round(max(r.fps_processing for r in runs), 2),
        "rss_total_mb": med([r.rss_total_mb for r in runs]),
        "rss_per_process_mb": med([max(r.peak_rss_mb) for r in runs]),
        "cpu_util": med([r.cpu_util for r in runs]),
        "cpu_ms_per_frame": med([1000 * r.cpu_s / r.frames for r in runs]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def stream_ratios(configs: dict[str, dict[str, Any]], streams: int) -> dict[str, Any]:
    """One process against N processes at one stream count, and memory per extra stream."""
    one = configs.get(config_key("one_process", streams))
    procs = configs.get(config_key("processes", streams))
    single = configs.get(config_key("one_process", 1))
    out: dict[str, Any] = {"streams": streams}
    if one and procs:
        out["fps_processing_ratio"] = _ratio(one["fps_processing"], procs["fps_processing"])
        out["fps_wall_ratio"] = _ratio(one["fps_wall"], procs["fps_wall"])
        out["memory_ratio"] = _ratio(one["rss_total_mb"], procs["rss_total_mb"])
    if one and single and streams > 1:
        out["mb_per_extra_stream"] = round((one["rss_total_mb"] - single["rss_total_mb"]) / (streams - 1), 1)
    if procs and streams > 1 and single:
        out["mb_per_extra_process"] = round((procs["rss_total_mb"] - single["rss_total_mb"]) / (streams - 1), 1)
    return out


def verdicts(ratios: dict[str, Any]) -> dict[str, bool | None]:
    fps, mb = ratios.get("fps_processing_ratio"), ratios.get("mb_per_extra_stream")
    return {
        "fps_ratio_met": None if fps is None else fps >= TARGET_FPS_RATIO,
        "memory_met": None if mb is None else mb <= TARGET_MB_PER_STREAM,
    }


def build_results(runs: Sequence[RunResult], counts: Sequence[int]) -> dict[str, Any]:
    """Per configuration summaries and per stream count ratios, from the raw runs."""
    grouped: dict[str, list[RunResult]] = {}
    for run in runs:
        grouped.setdefault(config_key(run.mode, run.streams), []).append(run)
    configs = {key: summarize(group) for key, group in grouped.items()}
    ratios = [stream_ratios(configs, n) for n in counts if n > 1]
    for r in ratios:
        r.update(verdicts(r))
    return {"configs": configs, "ratios": ratios, "runs": [r.to_dict() for r in runs]}


# --------------------------------------------------------------------------- tables


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def configs_table(results: dict[str, Any]) -> Table:
    table = Table(title="aggregate throughput and memory (median of repeats)")
    # processing: the summaries' clocks; wall: from launch, model loading included
    for col in ("N", "how", "frames", "fps", "fps wall", "best fps", "memory", "max/proc", "cores", "CPU ms/f"):
        table.add_column(col, justify="left" if col == "how" else "right")
    ordered = sorted(results["configs"].values(), key=lambda c: (c["streams"], c["mode"] != "processes"))
    for c in ordered:
        how = "1 process" if c["mode"] == "one_process" else f"{c['streams']} procs"
        table.add_row(str(c["streams"]), how, str(c["frames"]), _f(c["fps_processing"]), _f(c["fps_wall"]),
                      _f(c["fps_processing_best"]), _f(c["rss_total_mb"], 0, " MB"),
                      _f(c["rss_per_process_mb"], 0, " MB"), _f(c["cpu_util"], 2), _f(c["cpu_ms_per_frame"], 1))
    return table


def ratios_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"one process / N processes (targets: fps >= {TARGET_FPS_RATIO}x, "
                        f"<= {TARGET_MB_PER_STREAM:.0f} MB a stream)")
    for col in ("N", "fps", "fps wall", "memory", "MB/extra stream", "MB/extra proc.", "fps target", "MB target"):
        table.add_column(col, justify="right")
    for r in results["ratios"]:
        table.add_row(str(r["streams"]), _f(r.get("fps_processing_ratio"), 2, "x"), _f(r.get("fps_wall_ratio"), 2, "x"),
                      _f(r.get("memory_ratio"), 2, "x"), _f(r.get("mb_per_extra_stream"), 0),
                      _f(r.get("mb_per_extra_process"), 0), _met(r.get("fps_ratio_met")), _met(r.get("memory_met")))
    return table


def _met(flag: bool | None) -> str:
    return "-" if flag is None else ("[green]met[/]" if flag else "[red]missed[/]")


# ------------------------------------------------------------------------ the videos


def make_videos(count: int, seconds: float, fps: float, folder: Path, seed: int, log: Callable[[str], None]) -> list[Path]:
    """count 640x480 H.264 scenes with 4 people each; ones already in folder are reused."""
    from tooling.scenes import make_scenario, render, truth_path

    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for i in range(count):
        path = folder / f"streams_640x480_{seconds:g}s_{fps:g}fps_seed{seed + i}_h264.mp4"
        if not (path.is_file() and truth_path(path).is_file()):
            log(f"rendering {path}")
            render(make_scenario(seed + i, 4, 640, 480, fps, seconds), path, codec="h264")
        videos.append(path)
    return videos


# -------------------------------------------------------------------------- the runs


def _status_hwm_mb(pid: int) -> float:
    """The kernel's peak resident set (Linux), which sampling can miss by 50 ms."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class _Watched:
    """One launched process: its peak memory and CPU time, sampled while it runs."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        import psutil

        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.proc = psutil.Process(self.popen.pid)
        self.peak_mb = 0.0
        self.cpu_s = 0.0
        self.exit_time: float | None = None

    def sample(self) -> None:
        import psutil

        try:
            family = [self.proc, *self.proc.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in family) / 2**20
            hwm = _status_hwm_mb(self.proc.pid) + sum(p.memory_info().rss for p in family[1:]) / 2**20
            times = self.proc.cpu_times()
            self.cpu_s = times.user + times.system + times.children_user + times.children_system
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return
        self.peak_mb = max(self.peak_mb, rss, hwm)

    def poll(self) -> bool:
        """Whether it has exited (recording when)."""
        if self.exit_time is None and self.popen.poll() is not None:
            self.exit_time = time.perf_counter()
        return self.exit_time is not None


def _launch_all(argvs: Sequence[list[str]], work: Path) -> tuple[float, list[_Watched]]:
    started = time.perf_counter()
    watched = [_Watched(argv, work / f"log{i}.txt") for i, argv in enumerate(argvs)]
    while not all(w.poll() for w in watched):
        for w in watched:
            if w.exit_time is None:
                w.sample()
        time.sleep(SAMPLE_S)
    for w in watched:
        if w.popen.returncode != 0:
            tail = w.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"run_camera.py exited {w.popen.returncode}: {' '.join(w.popen.args)}\n{tail}")
    return started, watched


def _camera_argv(sources: Sequence[Path], summary: Path, extra: Sequence[str]) -> list[str]:
    argv = [sys.executable, str(RUN_CAMERA), "--no-display", "--quiet", "--summary", str(summary), *extra]
    for source in sources:
        argv += ["--source", str(source)]
    return argv


def run_config(mode: Mode, videos: Sequence[Path], repeat: int, work: Path, extra: Sequence[str]) -> RunResult:
    """One run: N processes of one source each, or one process of N sources."""
    work.mkdir(parents=True, exist_ok=True)
    groups = [[v] for v in videos] if mode == "processes" else [list(videos)]
    summaries = [work / f"summary{i}.json" for i in range(len(groups))]
    for s in summaries:
        s.unlink(missing_ok=True)
    argvs = [_camera_argv(g, s, extra) for g, s in zip(groups, summaries)]
    started, watched = _launch_all(argvs, work)
    counted = [summary_frames_and_seconds(json.loads(s.read_text())) for s in summaries]
    exits = [(w.exit_time or 0.0, seconds) for w, (_, seconds) in zip(watched, counted)]
    return RunResult(
        mode=mode, streams=len(videos), repeat=repeat, frames=sum(f for f, _ in counted),
        wall_s=max(t for t, _ in exits) - started, processing_s=processing_window(exits),
        peak_rss_mb=tuple(round(w.peak_mb, 1) for w in watched), cpu_s=sum(w.cpu_s for w in watched),
    )


def schedule(counts: Sequence[int], repeats: int) -> list[tuple[int, Mode, int]]:
    """(repeat, mode, streams) in run order: every configuration once per repeat, the
    order reversed on every other repeat so that drift in machine load evens out."""
    one_pass = [(mode, n) for n in sorted(counts) for mode in MODES if not (mode == "processes" and n == 1)]
    order: list[tuple[int, Mode, int]] = []
    for r in range(repeats):
        for mode, n in (one_pass if r % 2 == 0 else one_pass[::-1]):
            order.append((r, mode, n))
    return order


# ---------------------------------------------------------------------------- the CLI


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated stream counts, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > 32:
        raise argparse.ArgumentTypeError(f"stream counts must be 1..32, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tooling.bench_streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4, help="N: the most streams (default 4)")
    parser.add_argument("--counts", type=_counts, default=None,
                        help="stream counts to measure, e.g. 1,2,4 (default: 1 and N)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each video (default 20)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the videos (default 25)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (default 2)")
    parser.add_argument("--seed", type=int, default=100, help="seed of the first video (default 100)")
    parser.add_argument("--videos-dir", type=Path, default=Path("/tmp/bench_streams"),
                        help="where the videos are rendered and reused (default /tmp/bench_streams)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[int, ...]:
    if not 1 <= args.streams <= 32:
        parser.error("--streams must be 1..32")
    if args.seconds <= 0 or args.fps <= 0 or args.repeats < 1:
        parser.error("--seconds, --fps and --repeats must be positive")
    counts = args.counts or tuple(sorted({1, args.streams}))
    if max(counts) > args.streams:
        parser.error(f"--counts go up to {max(counts)}, more than --streams {args.streams}")
    if args.json is not None and not args.json.resolve().parent.is_dir():
        parser.error(f"output folder does not exist: {args.json.parent}")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(own)
    counts = _check(parser, args)
    console = Console()
    videos = make_videos(args.streams, args.seconds, args.fps, args.videos_dir, args.seed, console.log)
    load_before = load_average()
    runs = []
    for repeat, mode, n in schedule(counts, args.repeats):
        run = run_config(mode, videos[:n], repeat, args.videos_dir / "runs" / config_key(mode, n), extra)
        console.log(f"repeat {repeat + 1}: {n} stream(s), {mode}: {run.fps_processing:.1f} fps processing, "
                    f"{run.fps_wall:.1f} wall, {run.rss_total_mb:.0f} MB, {run.cpu_util:.2f} cores")
        runs.append(run)
    results = build_results(runs, counts)
    console.print(configs_table(results))
    console.print(ratios_table(results))
    report = {
        "settings": {"streams": args.streams, "counts": list(counts), "seconds": args.seconds, "fps": args.fps,
                     "repeats": args.repeats, "size": "640x480", "codec": "h264", "run_camera_args": extra,
                     "videos": [str(v) for v in videos]},
        "targets": {"fps_ratio": TARGET_FPS_RATIO, "mb_per_extra_stream": TARGET_MB_PER_STREAM},
        "machine": machine_info(), "versions": versions(),
        "load_before": load_before, "load_after": load_average(),
        **results,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
        console.log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
