"""How well the kiosk counts and profiles visitors, measured on generated scenes.

    python -m tooling.kiosk_accuracy --scenes 12 --json docs/kiosk-accuracy.json

Each scene comes from tooling.scenes (real labelled faces from ../shared composited on
moving paths, with known entries, exits, ages and genders) and goes through
`run_camera.py --kiosk` as a user runs it; the store's visits are scored against the
truth with tooling.kiosk_truth. The figures are the kiosk table of the README: visitors
counted, missed, split and spurious; dwell-time error; gender right among the visits
that show one (and how many show one: below --gender-confidence a visit stays
"unknown"); the age bracket exact and within one.

Scenes are rendered and run in a temporary folder that is removed afterwards; only the
JSON (refused if it exists) is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from realtime.kiosk.queries import StoreReader
from realtime.kiosk.visits import AgeBrackets
from realtime.paths import DEFAULT_MODEL, ROOT

from . import scenes
from .kiosk_truth import VisitScore, score, track_votes


@dataclass(frozen=True)
class SceneOptions:
    people: int = 4
    seconds: float = 30.0
    fps: float = 15.0
    face_px: tuple[float, float] = (70.0, 140.0)
    min_dwell_s: float = 2.0  # the kiosk's default: shorter passes are not visits


@dataclass(frozen=True)
class KioskAccuracy:
    """The scores of several scenes added up (dwell errors pooled)."""

    scenes: int
    truth_visitors: int
    visits: int
    missed: int
    split: int
    spurious: int
    dwell_within_frame: int
    dwell_within_3s: int
    dwell_scored: int
    dwell_worst_s: float
    gender_correct: int
    gender_known: int
    bracket_exact: int
    bracket_within_one: int
    bracket_known: int

    @property
    def gender_accuracy(self) -> float:
        return self.gender_correct / self.gender_known if self.gender_known else float("nan")

    @property
    def gender_shown(self) -> float:
        matched = self.visits - self.spurious
        return self.gender_known / matched if matched else float("nan")

    @property
    def bracket_exact_share(self) -> float:
        return self.bracket_exact / self.bracket_known if self.bracket_known else float("nan")

    @property
    def bracket_within_one_share(self) -> float:
        return self.bracket_within_one / self.bracket_known if self.bracket_known else float("nan")


def total(scores: list[VisitScore], fps: float) -> KioskAccuracy:
    """Pure: the scenes' scores as one table row."""
    errors = [e for s in scores for e in s.dwell_errors]
    return KioskAccuracy(
        scenes=len(scores),
        truth_visitors=sum(s.truth_visitors for s in scores),
        visits=sum(s.visits for s in scores),
        missed=sum(s.missed for s in scores),
        split=sum(s.split for s in scores),
        spurious=sum(s.spurious for s in scores),
        dwell_within_frame=sum(e <= 1.0 / fps + 1e-6 for e in errors),
        dwell_within_3s=sum(e <= 3.0 for e in errors),
        dwell_scored=len(errors),
        dwell_worst_s=max(errors, default=0.0),
        gender_correct=sum(s.gender_correct for s in scores),
        gender_known=sum(s.gender_known for s in scores),
        bracket_exact=sum(s.bracket_exact for s in scores),
        bracket_within_one=sum(s.bracket_within_one for s in scores),
        bracket_known=sum(s.bracket_known for s in scores),
    )


def run_scene(seed: int, folder: Path, model: Path, options: SceneOptions, extra: list[str]) -> VisitScore:
    """Render one scene, run the kiosk on it as a user would, score its store."""
    scenario = scenes.make_scenario(seed, n_people=options.people, fps=options.fps, seconds=options.seconds,
                                    face_px=options.face_px)
    video, data_dir, frames = folder / "visitors.mp4", folder / "store", folder / "frames.jsonl"
    truth = scenes.render(scenario, video)
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    args = [sys.executable, str(ROOT / "run_camera.py"), "--source", str(video), "--kiosk", "--data-dir", str(data_dir),
            "--model", str(model), "--quiet", "--no-display", "--frames", str(frames),
            "--min-dwell", f"{options.min_dwell_s:g}", *extra]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"scene {seed}: the kiosk exited {proc.returncode}: {last}")
    rows = (json.loads(line) for line in frames.read_text().splitlines() if line.strip())
    owner = track_votes(((r["frame"], [(f["track_id"], f["box"]) for f in r["faces"]]) for r in rows), truth)
    visits = StoreReader(data_dir).visits(0, time.time() + 3600)
    return score(visits, owner, truth, options.min_dwell_s, AgeBrackets())


def measure(seeds: list[int], model: Path, options: SceneOptions, jobs: int, extra: list[str]) -> list[VisitScore]:
    """Scenes side by side (a kiosk run keeps about one core busy); scores in seed order."""
    with tempfile.TemporaryDirectory(prefix="kiosk-accuracy-") as tmp:
        folders = [Path(tmp) / f"scene_{seed}" for seed in seeds]
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            return list(pool.map(lambda sf: run_scene(sf[0], sf[1], model, options, extra), zip(seeds, folders)))


def report_lines(result: KioskAccuracy) -> list[str]:
    r = result
    return [
        f"visitors: {r.truth_visitors} in {r.scenes} scenes; {r.visits} visits: {r.missed} missed, {r.split} split, "
        f"{r.spurious} spurious",
        f"dwell: {r.dwell_within_frame} of {r.dwell_scored} within a frame of the truth, {r.dwell_within_3s} within 3 s "
        f"(worst {r.dwell_worst_s:.1f} s)",
        f"gender: right {r.gender_accuracy:.0%} of the {r.gender_known} visits that show one "
        f"({r.gender_shown:.0%} of the matched visits show one)",
        f"age bracket: exact {r.bracket_exact_share:.0%}, within one {r.bracket_within_one_share:.0%} "
        f"({r.bracket_known} visits)",
    ]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number is needed, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.kiosk_accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=positive_int, default=12, help="scenes to run, seeds 0..N-1 (default 12)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--people", type=positive_int, default=4, help="visitors per scene (default 4)")
    parser.add_argument("--seconds", type=float, default=30.0, help="scene length (default 30)")
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("AGEGENDER_TEST_MODEL", DEFAULT_MODEL)))
    parser.add_argument("--jobs", type=positive_int, default=2, help="kiosks run side by side (default 2)")
    parser.add_argument("--json", type=Path, help="write the totals and each scene's score here (refused if it exists)")
    parser.add_argument("kiosk_args", nargs="*", help="after --: more run_camera.py options, e.g. -- --gender-confidence 0.85")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.exit(2, f"model not found: {args.model}\n")
    if args.json is not None and args.json.exists():
        parser.exit(2, f"{args.json} exists: choose another --json (it is never overwritten)\n")
    if not 2.0 < args.seconds <= 600:
        parser.exit(2, f"--seconds must be above 2 and at most 600, got {args.seconds:g}\n")
    options = SceneOptions(people=args.people, seconds=args.seconds)
    seeds = list(range(args.first_seed, args.first_seed + args.scenes))
    started = time.monotonic()
    try:
        scores = measure(seeds, args.model, options, args.jobs, args.kiosk_args)
    except (RuntimeError, ValueError, OSError) as exc:
        parser.exit(2, f"{exc}\n")
    result = total(scores, options.fps)
    for line in report_lines(result):
        print(line)
    print(f"({len(seeds)} scene(s) in {time.monotonic() - started:.0f} s, model {args.model})")
    if args.json is not None:
        record = {
            "command": "python -m tooling.kiosk_accuracy " + " ".join(argv if argv is not None else sys.argv[1:]),
            "model": str(args.model),
            "scene": asdict(options),
            "seeds": seeds,
            "totals": asdict(result),
            "gender_accuracy": result.gender_accuracy,
            "gender_shown": result.gender_shown,
            "bracket_exact": result.bracket_exact_share,
            "bracket_within_one": result.bracket_within_one_share,
            "per_scene": [{"seed": seed, **asdict(s)} for seed, s in zip(seeds, scores)],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "x") as f:  # "x": a file that appeared meanwhile is not overwritten
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
