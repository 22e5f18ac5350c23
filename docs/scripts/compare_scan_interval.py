"""Pipeline fps on one video with the tiled scan spread over different intervals, side by side.

    python docs/scripts/compare_scan_interval.py cache/bench/multi_1080p.mp4 5 default --rounds 2

Each setting runs `rounds` times, interleaved, so that machine noise hits all alike;
the best run of each is printed with the number of face boxes shown.
"""

from __future__ import annotations

import argparse

from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.sources import open_source
from tooling.bench import run_pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("intervals", nargs="+", help="frames, or 'default' (0.3 s of video)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-frames", type=int, default=300)
    args = p.parse_args()
    with open_source(args.video) as source:
        fps = source.info.fps
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.rounds):
        for name in args.intervals:
            interval = None if name == "default" else int(name)
            with Analyzer.create_from_options(AnalyzerOptions(device="cpu", fps=fps, scan_interval=interval)) as analyzer:
                result = run_pipeline(args.video, analyzer, args.max_frames)
            if name not in best or result.fps > best[name][0]:
                best[name] = (result.fps, result.faces)
    base = best[args.intervals[0]][0]
    for name, (value, faces) in best.items():
        print(f"scan interval {name:>8}: {value:6.1f} fps ({value / base:.2f}x), {faces} face boxes shown")


if __name__ == "__main__":
    main()
