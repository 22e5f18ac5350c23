"""How often the chunk merge is right: generated videos with known people, run whole and in chunks.

    python -m tooling.chunk_merge_eval --videos 8 --seconds 24 --people 5 --chunk 6 --overlap 2
    python -m tooling.chunk_merge_eval --seek-check     # frame-range reads against a sequential read

For each seed, a 640x480 scene (tooling.scenes; kept in --videos-dir and reused) is run
once whole and once in chunks (realtime.batch.chunks: process_chunk per chunk with a
fresh analyzer, then merge_chunks). Every chunk track is given the true person whose
boxes it matches most often (IoU >= 0.3). For every boundary a true person crosses
(shown on both sides of it), with a track of them on each side in the shared frames:

  right          the merge joined a track of theirs before the boundary to one after it
  split          it did not (the person is counted twice)
  wrongly fused  one of their tracks was joined to another person's (or a false track)

A crossing where one side had no track of the person in the shared frames is counted
as "untracked": nothing there for the merge to decide. Also the people per file: truth,
a whole-file run, and the chunked run merged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from realtime.analyzer import AnalyzerOptions, FrameResult
from realtime.batch.chunks import (
    ChunkResult,
    MergedPerson,
    box_iou,
    merge_chunks,
    plan_chunks,
    process_chunk,
)
from realtime.paths import DEFAULT_MODEL, SHARED_DATA
from realtime.sources import VideoFileSource
from realtime.streams import SharedEngines
from tooling import scenes

TRUTH_IOU = 0.3


@dataclass(frozen=True)
class FileScore:
    seed: int
    chunks: int
    crossings: int  # crossings with a track of the person on both sides in the shared frames
    right: int
    split: int
    fused: int
    untracked: int
    wrong_links: int  # merges of two tracks of different people, crossings or not
    truth_people: int
    whole_people: int
    chunked_people: int
    seconds: float


def render_scene(videos: Path, seed: int, people: int, seconds: float, size: tuple[int, int]) -> tuple[Path, dict]:
    path = videos / f"chunks_{seed}_{people}p_{seconds:g}s_{size[0]}x{size[1]}.mp4"
    truth_file = scenes.truth_path(path)
    if path.is_file() and truth_file.is_file():
        return path, json.loads(truth_file.read_text())
    scenario = scenes.make_scenario(seed, people, size[0], size[1], 25.0, seconds)
    return path, scenes.render(scenario, path)


def run_chunks(engines: SharedEngines, path: Path, chunk_s: float, overlap_s: float) -> tuple[list[ChunkResult], dict[tuple[int, int], dict[int, tuple]]]:
    """Every chunk's result, and every chunk track's boxes by frame (for scoring only)."""
    with VideoFileSource(path) as source:
        info = source.info
    boxes: dict[tuple[int, int], dict[int, tuple]] = defaultdict(dict)
    results = []
    for chunk in plan_chunks(info.frame_count or 1, info.fps, chunk_s, overlap_s):
        def keep(result: FrameResult, index: int = chunk.index) -> None:
            for face in result.faces:
                boxes[(index, face.track_id)][result.frame_index] = face.box

        # a fresh analyzer per chunk on the engine and model loaded once, as a batch worker does
        with engines.analyzer(AnalyzerOptions(device="cpu", fps=info.fps)) as analyzer:
            results.append(process_chunk(analyzer, path, chunk, on_result=keep))
    return results, boxes


def truth_ids(boxes: dict[tuple[int, int], dict[int, tuple]], truth: dict) -> dict[tuple[int, int], int | None]:
    """Each track's true person: the one its boxes match most often."""
    ids: dict[tuple[int, int], int | None] = {}
    for ref, frames in boxes.items():
        votes: Counter[int] = Counter()
        for frame, box in frames.items():
            best = max(truth["frames"][frame], key=lambda t: box_iou(box, t["box"]), default=None)
            if best is not None and box_iou(box, best["box"]) >= TRUTH_IOU:
                votes[best["id"]] += 1
        ids[ref] = votes.most_common(1)[0][0] if votes else None
    return ids


def links_of(merged: list[MergedPerson]) -> set[tuple[tuple[int, int], tuple[int, int]]]:
    return {(a, b) for m in merged for a, b in zip(m.parts, m.parts[1:])}


def shown_frames(person: dict, truth: dict) -> list[int]:
    last = min(person["last_frame"], truth["n_frames"] - 1)
    return [f for f in range(person["first_frame"], last + 1) if any(t["id"] == person["id"] for t in truth["frames"][f])]


def tracks_of(person: int, chunk: int, shared: range, boxes: dict, ids: dict) -> set[tuple[int, int]]:
    """The chunk's tracks of a true person that have a box in the shared frames."""
    return {r for r, i in ids.items() if r[0] == chunk and i == person and any(f in shared for f in boxes[r])}


def score_crossings(results: list[ChunkResult], merged: list[MergedPerson], boxes: dict, ids: dict, truth: dict) -> Counter[str]:
    links = links_of(merged)
    outcome: Counter[str] = Counter()
    for previous, result in pairwise(results):
        boundary, shared = result.chunk.own_start, result.chunk.head
        for person in truth["people"]:
            shown = shown_frames(person, truth)
            if not shown or shown[0] >= boundary or shown[-1] < boundary:
                continue
            before = tracks_of(person["id"], previous.chunk.index, shared, boxes, ids)
            after = tracks_of(person["id"], result.chunk.index, shared, boxes, ids)
            if not before or not after:
                outcome["untracked"] += 1
                continue
            mine = [(a, b) for a, b in links if a in before or b in after]
            if any(ids[a] != ids[b] for a, b in mine):
                outcome["fused"] += 1
            elif any(a in before and b in after for a, b in mine):
                outcome["right"] += 1
            else:
                outcome["split"] += 1
    outcome["wrong_links"] = sum(ids.get(a) != ids.get(b) or ids.get(a) is None for a, b in links)
    return outcome


def evaluate(engines: SharedEngines, path: Path, truth: dict, seed: int, chunk_s: float, overlap_s: float) -> FileScore:
    started = time.perf_counter()
    frames = truth["n_frames"]
    whole, _ = run_chunks(engines, path, frames / truth["fps"] + 1.0, 0.0)
    results, boxes = run_chunks(engines, path, chunk_s, overlap_s)
    merged = merge_chunks(results)
    ids = truth_ids(boxes, truth)
    outcome = score_crossings(results, merged, boxes, ids, truth)
    return FileScore(
        seed=seed, chunks=len(results), crossings=outcome["right"] + outcome["split"] + outcome["fused"],
        right=outcome["right"], split=outcome["split"], fused=outcome["fused"], untracked=outcome["untracked"],
        wrong_links=outcome["wrong_links"], truth_people=len(truth["people"]), whole_people=len(merge_chunks(whole)),
        chunked_people=len(merged), seconds=round(time.perf_counter() - started, 1),
    )


def score_table(scores: Sequence[FileScore], title: str) -> Table:
    table = Table(title=title)
    columns = ("seed", "chunks", "crossings", "right", "split", "wrongly fused", "untracked", "wrong links",
               "people: truth", "whole file", "chunked")
    for column in columns:
        table.add_column(column, justify="right")
    fields = ("seed", "chunks", "crossings", "right", "split", "fused", "untracked", "wrong_links",
              "truth_people", "whole_people", "chunked_people")
    for s in scores:
        table.add_row(*(str(getattr(s, f)) for f in fields))
    table.add_row("all", *(str(sum(getattr(s, f) for s in scores)) for f in fields[1:]), style="bold")
    return table


# ------------------------------------------------------------------ frame-range reads




def grab_to(path: Path, start: int, count: int) -> list[np.ndarray]:
    """The alternative to a seek: every frame before `start` grabbed (decoded, not converted)."""
    cap = cv2.VideoCapture(str(path))
    for _ in range(start):
        cap.grab()
    frames = [cap.read()[1] for _ in range(count)]
    cap.release()
    return frames


def seek_check(paths: Sequence[Path], starts: int = 12, count: int = 5) -> Table:
    """For each file, frames read from a range against a sequential read, pixel for pixel."""
    table = Table(title="frame-range reads against a sequential read (pixels equal)")
    for column in ("file", "frames", "ranges", "seek exact", "seek s", "grab exact", "grab s"):
        table.add_column(column, justify="right")
    rng = np.random.default_rng(0)
    for path in paths:
        reference = scenes.read_frames(path)
        n = len(reference)
        picks = sorted({1, n - count, *map(int, rng.integers(1, n - count, starts))})
        exact = {"seek": 0, "grab": 0}
        seconds = {"seek": 0.0, "grab": 0.0}
        for start in picks:
            clock = time.perf_counter()
            with VideoFileSource(path, start, start + count) as source:
                got = [f.image for f in source]
            seconds["seek"] += time.perf_counter() - clock
            exact["seek"] += all(np.array_equal(a, b) for a, b in zip(got, reference[start:start + count])) and len(got) == count
            clock = time.perf_counter()
            got = grab_to(path, start, count)
            seconds["grab"] += time.perf_counter() - clock
            exact["grab"] += all(a is not None and np.array_equal(a, b) for a, b in zip(got, reference[start:start + count]))
        table.add_row(path.name, str(n), str(len(picks)), f"{exact['seek']}/{len(picks)}", f"{seconds['seek']:.2f}",
                      f"{exact['grab']}/{len(picks)}", f"{seconds['grab']:.2f}")
    return table


def seek_files(videos: Path) -> list[Path]:
    files = []
    for codec in ("mp4v", "h264"):
        path = videos / f"seek_{codec}.mp4"
        if not path.is_file():
            scenes.render(scenes.make_scenario(3, 3, 640, 480, 25.0, 30.0), path, codec=codec)  # type: ignore[arg-type]
        files.append(path)
    return [*files, SHARED_DATA / "videos" / "three_people_walking.gif", SHARED_DATA / "videos" / "webcam_one_person.mp4"]


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.chunk_merge_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8, help="generated videos (seeds 0..N-1; default 8)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=24.0, help="length of each video (default 24)")
    parser.add_argument("--people", type=int, default=5, help="people per video (default 5)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--chunk", type=float, default=6.0, help="chunk seconds (default 6)")
    parser.add_argument("--overlap", type=float, default=2.0, help="overlap seconds (default 2)")
    parser.add_argument("--videos-dir", type=Path, default=Path("/tmp/chunk_merge_eval"), help="where scenes are kept")
    parser.add_argument("--json", type=Path, help="write the per-file scores here")
    parser.add_argument("--seek-check", action="store_true", help="only compare frame-range reads with sequential reads")
    args = parser.parse_args(argv)
    console = Console(width=150)  # the table's eleven columns
    args.videos_dir.mkdir(parents=True, exist_ok=True)
    if args.seek_check:
        console.print(seek_check(seek_files(args.videos_dir)))
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    scores = []
    with SharedEngines.create(AnalyzerOptions().detector, DEFAULT_MODEL, "cpu") as engines:
        for seed in range(args.first_seed, args.first_seed + args.videos):
            path, truth = render_scene(args.videos_dir, seed, args.people, args.seconds, (width, height))
            scores.append(evaluate(engines, path, truth, seed, args.chunk, args.overlap))
            console.print(scores[-1])
    title = f"{args.videos} videos of {args.seconds:g} s, {args.people} people, {args.size}, chunks {args.chunk:g} s, overlap {args.overlap:g} s"
    console.print(score_table(scores, title))
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in scores], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
