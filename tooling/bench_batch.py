"""Archives on Ray: `python -m realtime.batch` with 1 and 2 workers against run_camera.py
run file after file, on the same generated videos, side by side in one run.

    python -m tooling.bench_batch --files 6 --seconds 10 --json bench_batch.json

Each figure is video seconds processed per wall-clock second of the whole command, as a
user waits for it: process start, Ray start, model loads and all. Memory per worker is
the largest resident set of each `ray::FileWorker` process seen while the batch runs
(sampled every 0.2 s with psutil), beside that of one run_camera.py process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from realtime.paths import ROOT


@dataclass(frozen=True)
class Measure:
    name: str
    wall_s: float
    video_s: float
    memory_mb: float  # per worker process (largest seen), or the one process's
    workers: int

    @property
    def speed(self) -> float:
        return self.video_s / self.wall_s


class PeakMemory:
    """The largest resident set of each process matching `match`, sampled on a thread."""

    def __init__(self, match: str) -> None:
        self.match, self.peaks = match, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            for p in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if self.match in cmd and p.info["memory_info"] is not None:
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.info["memory_info"].rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def per_process_mb(self) -> float:
        return statistics.mean(self.peaks.values()) / 2**20 if self.peaks else 0.0


def make_videos(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> float:
    """`count` scenes of 3 people; returns their total length in seconds."""
    from tooling.scenes import make_scenario, render

    for i in range(count):
        render(make_scenario(100 + i, n_people=3, width=size[0], height=size[1], fps=25.0, seconds=seconds), folder / f"scene{i}.mp4")
    return count * seconds


def timed(cmd: list[str], match: str) -> tuple[float, float]:
    with PeakMemory(match) as memory:
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - started
    return wall, memory.per_process_mb()


def file_after_file(videos: list[Path], video_s: float) -> Measure:
    walls, mems = [], []
    for video in videos:
        wall, mem = timed([sys.executable, str(ROOT / "run_camera.py"), "--source", str(video), "--no-display", "--quiet", "--device", "cpu"], "run_camera.py")
        walls.append(wall)
        mems.append(mem)
    return Measure("run_camera.py file after file", sum(walls), video_s, max(mems), 1)


def batch(folder: Path, out: Path, workers: int, video_s: float) -> Measure:
    cmd = [sys.executable, "-m", "realtime.batch", str(folder), "--out", str(out), "--workers", str(workers), "--quiet", "--device", "cpu"]
    wall, mem = timed(cmd, "ray::FileWorker")
    return Measure(f"realtime.batch, {workers} worker{'s' if workers > 1 else ''}", wall, video_s, mem, workers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", default="640x480")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        video_s = make_videos(folder, args.files, args.seconds, size)  # type: ignore[arg-type]
        videos = sorted(folder.glob("*.mp4"))
        measures = [file_after_file(videos, video_s)]
        measures += [batch(folder, Path(tmp) / f"out{w}", w, video_s) for w in (1, 2)]
    base = measures[0].speed
    one = measures[1].speed
    print(f"{args.files} files x {args.seconds:g} s at {args.size}: {video_s:g} s of video")
    print(f"{'run':34} {'wall s':>8} {'video s/s':>10} {'vs run_camera':>14} {'MB/worker':>10}")
    for m in measures:
        print(f"{m.name:34} {m.wall_s:8.1f} {m.speed:10.2f} {m.speed / base:13.2f}x {m.memory_mb:10.0f}")
    print(f"scaling efficiency, 2 workers vs 1: {measures[2].speed / (2 * one):.0%}")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(m), "speed": m.speed} for m in measures], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
