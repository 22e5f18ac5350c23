"""Soak run: an hour of synthetic kiosk traffic through the whole kiosk path, and the
process's resident memory along the way.

    python -m tooling.soak --minutes 60 --fps 15

The stream is a sequence of one-minute scenes from tooling.scenes (real labelled
faces from ../shared composited on moving paths, a few people per scene, entering and
leaving), with time advanced by the frame rate rather than the clock, so an hour of
stream runs as fast as the machine allows. Frames go through the same runner, analyzer,
visit builder and SQLite store as `run_camera.py --kiosk`. Resident memory is sampled
every few stream minutes; the figure that matters is the growth after the warm-up
(model arenas, caches and the SQLite page cache fill during the first minutes).

The generator's own image caches are cleared between scenes: they belong to the test
harness, not to the kiosk, and would otherwise be counted as the kiosk's growth.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rich.console import Console

from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.kiosk.session import KioskSession
from realtime.kiosk.store import KioskStore, StoreOptions
from realtime.kiosk.visits import VisitRules
from realtime.paths import DEFAULT_MODEL
from realtime.runner import RunOptions, run
from realtime.sources import Frame, FrameSource, SourceInfo

from . import scenes


@dataclass(frozen=True)
class SoakOptions:
    minutes: float = 60.0
    fps: float = 15.0
    width: int = 640
    height: int = 480
    people_per_scene: int = 3
    scene_s: float = 60.0
    face_px: tuple[float, float] = (60.0, 140.0)
    warmup_minutes: float = 5.0
    sample_minutes: float = 5.0
    seed: int = 1000


def rss_mb() -> float:
    """Resident set size now, in MB (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def trimmed_rss_mb() -> float | None:
    """RSS after handing freed heap back to the system (glibc), or None elsewhere.

    glibc keeps freed memory in its arenas, so plain RSS rises in steps when a bigger
    allocation pattern appears once; what is left after malloc_trim is what the process
    really still holds, which is what separates a leak from allocator slack.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return rss_mb()


class SyntheticKioskSource(FrameSource):
    """Scene after scene of synthetic people, at stream time index / fps."""

    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        n = int(round(options.minutes * 60 * options.fps))
        self.frame_count = n
        self.info = SourceInfo("file", f"synthetic kiosk stream ({options.minutes:g} min)", options.fps, options.width, options.height, n)

    def __iter__(self) -> Iterator[Frame]:
        o = self.options
        index = 0
        scene = 0
        while index < self.frame_count:
            scenario = scenes.make_scenario(
                o.seed + scene, n_people=o.people_per_scene, width=o.width, height=o.height, fps=o.fps,
                seconds=o.scene_s, face_px=o.face_px,
            )
            for image in scenes.frames(scenario):
                if index >= self.frame_count:
                    break
                yield Frame(index, index / o.fps, image)
                index += 1
            scene += 1
            scenes.clear_caches()


@dataclass
class SoakResult:
    frames: int
    visits: int
    viewers: int
    seconds: float
    samples: list[tuple[float, float]]  # (stream minute, RSS MB)
    trimmed: list[float | None]  # RSS after malloc_trim at the same samples
    start_mb: float
    baseline_mb: float  # after the warm-up
    end_mb: float

    @property
    def trimmed_growth_mb(self) -> float | None:
        if len(self.trimmed) < 2 or self.trimmed[0] is None or self.trimmed[-1] is None:
            return None
        return self.trimmed[-1] - self.trimmed[0]

    @property
    def growth_mb(self) -> float:
        return self.end_mb - self.baseline_mb

    @property
    def slope_mb_per_hour(self) -> float:
        """Least-squares trend of RSS after the warm-up, per hour of stream."""
        pts = [(m, r) for m, r in self.samples if m >= self.samples[0][0]]
        if len(pts) < 2:
            return 0.0
        x = np.array([p[0] for p in pts]) / 60.0
        y = np.array([p[1] for p in pts])
        return float(np.polyfit(x, y, 1)[0])


def run_soak(options: SoakOptions, data_dir: Path, model_path: Path, progress: bool = True) -> SoakResult:
    console = Console(stderr=True)
    start_mb = rss_mb()
    source = SyntheticKioskSource(options)
    store = KioskStore.open(data_dir, StoreOptions(), source=source.info.name)
    samples: list[tuple[float, float]] = []
    trimmed: list[float | None] = []
    every = max(1, int(round(options.sample_minutes * 60 * options.fps)))
    warmup = int(round(options.warmup_minutes * 60 * options.fps))
    started = time.perf_counter()
    # stream time 0 is `minutes` ago, so the visits land in the past hour of the store
    origin = time.time() - options.minutes * 60
    try:
        with Analyzer.create_from_options(AnalyzerOptions(model_path=model_path, device="cpu", fps=options.fps)) as analyzer:
            session = KioskSession(store, VisitRules(), options.fps, origin=origin)

            def sample(result) -> None:  # type: ignore[no-untyped-def]
                n = result.frame_index + 1
                if n >= warmup and (n - warmup) % every == 0:
                    gc.collect()
                    minute = n / options.fps / 60
                    samples.append((minute, rss_mb()))
                    trimmed.append(trimmed_rss_mb())
                    if progress:
                        rate = n / (time.perf_counter() - started)
                        after = "" if trimmed[-1] is None else f" ({trimmed[-1]:7.1f} MB after malloc_trim)"
                        console.print(f"soak: stream minute {minute:5.1f}  RSS {samples[-1][1]:7.1f} MB{after}  "
                                      f"{session.visits} visits  {rate:.1f} fps")

            run(source, analyzer, RunOptions(progress=False, keep_people=False), console=console, on_result=sample, sinks=[session])
    finally:
        store.close("finished")
    gc.collect()
    end_mb = rss_mb()
    if not samples:
        samples.append((options.minutes, end_mb))
    return SoakResult(
        frames=source.frame_count,
        visits=session.visits,
        viewers=session.viewers,
        seconds=time.perf_counter() - started,
        samples=samples,
        trimmed=trimmed,
        start_mb=start_mb,
        baseline_mb=samples[0][1],
        end_mb=end_mb,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tooling.soak", description="Memory soak of the kiosk on a synthetic stream.")
    p.add_argument("--minutes", type=float, default=60.0, help="stream length in minutes (default 60)")
    p.add_argument("--fps", type=float, default=15.0, help="stream frame rate (default 15)")
    p.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--people", type=int, default=3, help="people per one-minute scene (default 3)")
    p.add_argument("--warmup", type=float, default=5.0, help="stream minutes before the baseline sample (default 5)")
    p.add_argument("--sample-every", type=float, default=5.0, help="stream minutes between samples (default 5)")
    p.add_argument("--model", type=Path, default=Path(os.environ.get("AGEGENDER_TEST_MODEL", DEFAULT_MODEL)))
    p.add_argument("--data-dir", type=Path, help="store folder (default: a temporary one, removed afterwards)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    options = SoakOptions(
        minutes=args.minutes, fps=args.fps, width=w, height=h, people_per_scene=args.people,
        warmup_minutes=min(args.warmup, args.minutes), sample_minutes=args.sample_every,
        face_px=(min(60.0, h / 5), min(140.0, h / 3)),
    )
    with tempfile.TemporaryDirectory(prefix="kiosk-soak-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        result = run_soak(options, data_dir, args.model)
    print(f"soak: {result.frames} frames ({options.minutes:g} min at {options.fps:g} fps, {w}x{h}) in {result.seconds / 60:.1f} min "
          f"({result.frames / result.seconds:.1f} fps); {result.visits} visits, {result.viewers} viewers")
    print(f"soak: RSS {result.start_mb:.1f} MB at start, {result.baseline_mb:.1f} MB after {options.warmup_minutes:g} min warm-up, "
          f"{result.end_mb:.1f} MB at the end")
    print(f"soak: resident memory growth after warm-up: {result.growth_mb:+.1f} MB "
          f"(trend {result.slope_mb_per_hour:+.1f} MB per stream hour)")
    if result.trimmed_growth_mb is not None:
        print(f"soak: growth of the memory still held (RSS after malloc_trim, first to last sample): "
              f"{result.trimmed_growth_mb:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
