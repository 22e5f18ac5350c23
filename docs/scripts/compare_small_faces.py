"""People found and pipeline speed with and without the small-face scan, side by side.

    python docs/scripts/compare_small_faces.py --rounds 5

Runs each video with `DetectorOptions.min_face_px` at its default (small frames are
also swept in small tiles, see tiling.scan_plan) and at infinity (the scan before it:
one whole-frame pass for frames up to 800 px), alternately, `rounds` times, so that
machine noise hits both alike. Prints the best run of each: frames per second, CPU
milliseconds per frame (all threads; steadier than wall time on a busy machine), the
people counted, and the ratios new / old.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.detection import DetectorOptions
from realtime.sources import open_source
from tooling.bench import PhaseResult, run_pipeline

VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "videos"
CLIPS = ("classroom_four_seated.gif", "webcam_one_person.mp4", "three_people_walking.gif", "two_people_walking.gif")
SETTINGS = {"before": math.inf, "after": DetectorOptions().min_face_px}


def run_once(video: str, fps: float, min_face_px: float, max_frames: int) -> PhaseResult:
    detector = replace(DetectorOptions(), min_face_px=min_face_px)
    with Analyzer.create_from_options(AnalyzerOptions(device="cpu", fps=fps, detector=detector)) as analyzer:
        return run_pipeline(video, analyzer, max_frames)


def better(a: PhaseResult | None, b: PhaseResult) -> PhaseResult:
    return b if a is None or b.fps > a.fps else a


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("videos", nargs="*", help=f"default: the four clips in {VIDEOS}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-frames", type=int, default=250, help="per run (the GIFs have 35-45)")
    args = p.parse_args()
    videos = args.videos or [str(VIDEOS / name) for name in CLIPS]
    best: dict[tuple[str, str], PhaseResult] = {}
    for video in videos:
        with open_source(video) as source:
            fps = source.info.fps
        for _ in range(args.rounds):
            for name, min_face in SETTINGS.items():
                key = (video, name)
                best[key] = better(best.get(key), run_once(video, fps, min_face, args.max_frames))
    print(f"{'video':<28}{'setting':<8}{'fps':>8}{'cpu ms/frame':>14}{'people':>8}")
    for video in videos:
        old, new = best[(video, "before")], best[(video, "after")]
        for name, r in (("before", old), ("after", new)):
            cpu_ms = 1000 * r.cpu_seconds / max(1, r.frames)
            print(f"{Path(video).name:<28}{name:<8}{r.fps:8.1f}{cpu_ms:14.1f}{r.extra.get('people', 0):>8}")
        cpu_ratio = (new.cpu_seconds / max(1, new.frames)) / max(1e-9, old.cpu_seconds / max(1, old.frames))
        print(f"{'':<28}{'ratio':<8}{new.fps / old.fps:8.2f}{cpu_ratio:14.2f}")


if __name__ == "__main__":
    main()
