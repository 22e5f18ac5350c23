"""Scoring kiosk visits against a synthetic video's ground truth (shared by the kiosk
tests and the measurement in the kiosk notes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from realtime.kiosk.queries import VisitRow
from realtime.kiosk.visits import Visit
from tooling.scenes import iou

VisitLike = VisitRow | Visit
MATCH_IOU = 0.3


@dataclass(frozen=True)
class VisitScore:
    truth_visitors: int
    visits: int
    missed: int  # truth visitors with no visit
    split: int  # extra visits of a truth visitor seen more than once
    spurious: int  # visits that match no truth visitor
    dwell_errors: list[float]  # |visit dwell - truth dwell| of visitors seen exactly once, seconds
    gender_correct: int
    gender_known: int
    bracket_exact: int
    bracket_within_one: int
    bracket_known: int

    @property
    def count_error(self) -> int:
        return self.visits - self.truth_visitors


def track_votes(frame_faces: Iterable[tuple[int, Sequence[tuple[int, Sequence[float]]]]], truth: dict) -> dict[int, int]:
    """track id -> truth person id, by majority of frames whose box overlaps the truth box.

    frame_faces: (frame index, [(track id, box x1 y1 x2 y2), ...]) per frame.
    """
    votes: dict[int, Counter] = {}
    for frame, faces in frame_faces:
        gt = truth["frames"][frame] if frame < len(truth["frames"]) else []
        for track_id, box in faces:
            best = max(gt, key=lambda g: iou(box, g["box"]), default=None)
            if best is not None and iou(box, best["box"]) >= MATCH_IOU:
                votes.setdefault(track_id, Counter())[best["id"]] += 1
    return {tid: c.most_common(1)[0][0] for tid, c in votes.items()}


def truth_visitors(truth: dict, min_dwell_s: float) -> dict[int, dict]:
    fps = truth["fps"]
    return {p["id"]: p for p in truth["people"] if (p["last_frame"] - p["first_frame"] + 1) / fps >= min_dwell_s}


def score(visits: Sequence[VisitLike], owner: dict[int, int], truth: dict, min_dwell_s: float, bracket_of) -> VisitScore:
    """visits: the store's VisitRow or Visit (anything with track_id, dwell_s, gender, bracket)."""
    fps = truth["fps"]
    people = truth_visitors(truth, min_dwell_s)
    by_person: dict[int, list[VisitLike]] = {}
    spurious = 0
    for v in visits:
        pid = owner.get(v.track_id)
        if pid is None or pid not in people:
            spurious += 1
        else:
            by_person.setdefault(pid, []).append(v)
    dwell_errors, g_ok, g_n, b_ok, b_near, b_n = [], 0, 0, 0, 0, 0
    for pid, vs in by_person.items():
        p = people[pid]
        if len(vs) == 1:
            dwell_errors.append(abs(vs[0].dwell_s - (p["last_frame"] - p["first_frame"] + 1) / fps))
        for v in vs:
            if v.gender != "unknown":
                g_n += 1
                g_ok += v.gender == p["gender"]
            if v.bracket != "unknown":
                b_n += 1
                labels = bracket_of.labels
                want, got = labels.index(bracket_of.label(p["age"])), labels.index(v.bracket)
                b_ok += want == got
                b_near += abs(want - got) <= 1
    return VisitScore(
        truth_visitors=len(people),
        visits=len(visits),
        missed=sum(1 for pid in people if pid not in by_person),
        split=sum(len(vs) - 1 for vs in by_person.values()),
        spurious=spurious,
        dwell_errors=dwell_errors,
        gender_correct=g_ok,
        gender_known=g_n,
        bracket_exact=b_ok,
        bracket_within_one=b_near,
        bracket_known=b_n,
    )
