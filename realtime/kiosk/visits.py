"""Visits, glances and audience figures: the pure logic of the kiosk.

Definitions, as the digital-signage trade uses them:

* visit (one "opportunity to see", OTS): a tracked person who stayed in view for at
  least the minimum dwell (default 2 s); shorter tracks are passers-by or detector
  noise and are not counted. OTS for a period = the number of visits that started in it.
* dwell time: from the first to the last frame in which the person was seen.
* glance: a span of frames in which the face was turned toward the screen (head yaw and
  pitch within limits, see attention.py), lasting at least the minimum glance (default
  0.5 s); attentive frames less than `merge_gap_s` apart belong to the same span, so a
  flicker of the pose estimate does not split one look into two.
* attention time of a visit: the total duration of its glances.
* viewer: a visit with at least one glance.
* attention rate = viewers / OTS.
* average attention time = total attention time / viewers (per viewer, not per visit,
  as the trade reports it); average dwell time = total dwell / visits.

A person who leaves and comes back after the tracker's timeout is a second visit: the
kiosk never recognises anyone, so it cannot know.

How a visit ended (`Visit.ended`): "left" when the tracker saw the person go, "stopped"
when the person was still in view as the run stopped, "crashed" when the run died with
the person in view: that visit is its last checkpoint (see store.py), so its dwell is
short of the truth by at most the checkpoint interval.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

from .attention import AttentionOptions, face_attentive

if TYPE_CHECKING:  # the analyzer pulls in the detector and the model runtime
    from ..analyzer import FrameResult, TrackSummary

UNKNOWN = "unknown"
GENDERS = ("female", "male", UNKNOWN)
# histogram bin edges, seconds: bin 0 is below the first edge, the last bin is open
DWELL_EDGES: tuple[float, ...] = (5, 10, 20, 30, 60, 120, 300)
ATTENTION_EDGES: tuple[float, ...] = (1, 2, 5, 10, 30)
# how a visit ended, see the module docstring
LEFT, STOPPED, CRASHED = "left", "stopped", "crashed"


@dataclass(frozen=True)
class AgeBrackets:
    """Lower age bounds of each bracket after the first: (18, 25) is under 18, 18-24, 25+."""

    edges: tuple[int, ...] = (18, 25, 35, 45, 55, 65)

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("age brackets need at least one boundary")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])) or self.edges[0] <= 0 or self.edges[-1] > 120:
            raise ValueError(f"age bracket boundaries must increase within 1..120, got {','.join(map(str, self.edges))}")

    @classmethod
    def parse(cls, text: str) -> "AgeBrackets":
        try:
            edges = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
        except ValueError:
            raise ValueError(f"age brackets must be whole years separated by commas, e.g. 18,25,35, got {text!r}") from None
        return cls(edges)

    @property
    def labels(self) -> tuple[str, ...]:
        e = self.edges
        middle = tuple(f"{a}-{b - 1}" for a, b in zip(e, e[1:]))
        return (f"under {e[0]}", *middle, f"{e[-1]}+")

    def label(self, age: float | None) -> str:
        if age is None or not math.isfinite(age):
            return UNKNOWN
        return self.labels[bisect.bisect_right(self.edges, age)]


def bracket_order(label: str) -> tuple[int, int]:
    """Sort key for bracket labels of any configuration: by lower bound, unknown last."""
    if label == UNKNOWN:
        return (2, 0)
    if label.startswith("under "):
        return (0, -1)
    digits = label.split("-")[0].rstrip("+")
    return (0, int(digits)) if digits.isdigit() else (1, 0)


@dataclass(frozen=True)
class VisitRules:
    min_dwell_s: float = 2.0
    min_glance_s: float = 0.5
    merge_gap_s: float = 0.3
    brackets: AgeBrackets = AgeBrackets()
    attention: AttentionOptions = AttentionOptions()
    # a track unseen this long is forgotten even if it never becomes a summary (the
    # analyzer drops tracks shorter than its minimum frames without a summary)
    forget_s: float = 30.0


@dataclass(frozen=True)
class Visit:
    track_id: int
    start: float  # seconds since the epoch
    end: float
    dwell_s: float
    attention_s: float
    glances: int
    age: float | None
    age_std: float | None
    bracket: str
    gender: str  # female, male or unknown
    gender_confidence: float | None
    ended: str = LEFT

    @property
    def viewer(self) -> bool:
        return self.glances > 0


def extend_spans(spans: list[tuple[float, float]], time: float, merge_gap_s: float) -> None:
    """Add an attentive frame at `time` (after every frame in `spans`) to the (first, last) spans."""
    if spans and time - spans[-1][1] <= merge_gap_s + 1e-9:
        spans[-1] = (spans[-1][0], time)
    else:
        spans.append((time, time))


def attentive_spans(times: Iterable[float], merge_gap_s: float) -> list[tuple[float, float]]:
    """Times of attentive frames, in order, grouped into (first, last) spans."""
    spans: list[tuple[float, float]] = []
    for t in times:
        extend_spans(spans, t, merge_gap_s)
    return spans


def glance_durations(spans: Sequence[tuple[float, float]], frame_dt: float, min_glance_s: float) -> list[float]:
    """Durations of the spans long enough to be glances; each frame stands for one frame interval."""
    durations = (last - first + frame_dt for first, last in spans)
    return [d for d in durations if d >= min_glance_s - 1e-9]


def dwell_seconds(summary: TrackSummary, frame_dt: float) -> float:
    return summary.last_time - summary.first_time + frame_dt


@dataclass(frozen=True)
class Seen:
    """What a visit is made of: a track's first and last time in view and its estimate."""

    track_id: int
    first_time: float  # source seconds
    last_time: float
    age: float | None
    age_std: float | None
    gender: str | None
    gender_confidence: float | None


def make_visit(
    seen: Seen | TrackSummary, spans: Sequence[tuple[float, float]], frame_dt: float, origin: float, rules: VisitRules,
    ended: str = LEFT,
) -> Visit | None:
    """The visit a finished (or, for a checkpoint, ongoing) track makes, or None if too short to count."""
    dwell = seen.last_time - seen.first_time + frame_dt
    if dwell < rules.min_dwell_s:
        return None
    glances = glance_durations(spans, frame_dt, rules.min_glance_s)
    gender = seen.gender if seen.gender in ("female", "male") else UNKNOWN
    return Visit(
        track_id=seen.track_id,
        start=origin + seen.first_time,
        end=origin + seen.last_time + frame_dt,
        dwell_s=dwell,
        attention_s=min(sum(glances), dwell),
        glances=len(glances),
        age=seen.age,
        age_std=seen.age_std,
        bracket=rules.brackets.label(seen.age),
        gender=gender,
        gender_confidence=seen.gender_confidence if gender != UNKNOWN else None,
        ended=ended,
    )


@dataclass
class _TrackAttention:
    first_seen: float
    last_seen: float
    spans: list[tuple[float, float]] = field(default_factory=list)
    # the latest estimate shown for the person, for the checkpoint of an open visit
    age: float | None = None
    age_std: float | None = None
    gender: str | None = None
    gender_confidence: float | None = None

    def so_far(self, track_id: int) -> Seen:
        return Seen(track_id, self.first_seen, self.last_seen, self.age, self.age_std, self.gender, self.gender_confidence)


class VisitBuilder:
    """Turns the analyzer's frame results into visits as people leave.

    Keeps per person only the attentive spans (a few numbers), never frames or crops.
    """

    def __init__(self, rules: VisitRules, fps: float) -> None:
        self.rules = rules
        self.frame_dt = 1.0 / fps if fps and math.isfinite(fps) and fps > 0 else 1.0 / 25.0
        self._tracks: dict[int, _TrackAttention] = {}
        self._last_time: float | None = None
        self._last_purge = -math.inf

    @property
    def people_now(self) -> int:
        return len(self._tracks)

    def observe(self, result: FrameResult, origin: float) -> list[Visit]:
        """Record this frame's faces; returns the visits of the people who left at it."""
        self._update_frame_dt(result.time)
        for face in result.faces:
            track = self._tracks.setdefault(face.track_id, _TrackAttention(result.time, result.time))
            track.last_seen = result.time
            if face.age is not None:
                track.age, track.age_std = float(face.age), face.age_std
            if face.gender is not None:
                track.gender, track.gender_confidence = face.gender, face.gender_confidence
            # the one place attention is judged: the analyzer only reports the face
            if face_attentive(face.keypoints, face.quality.frontal, self.rules.attention):
                extend_spans(track.spans, result.time, self.rules.merge_gap_s)
        visits = self.close(result.finished, origin)
        if result.time - self._last_purge > self.rules.forget_s:
            self._purge(result.time)
        return visits

    def close(self, summaries: Iterable[TrackSummary], origin: float, ended: str = LEFT) -> list[Visit]:
        visits = []
        for summary in summaries:
            track = self._tracks.pop(summary.track_id, None)
            visit = make_visit(summary, track.spans if track else [], self.frame_dt, origin, self.rules, ended)
            if visit is not None:
                visits.append(visit)
        return visits

    def finish(self, summaries: Iterable[TrackSummary], origin: float) -> list[Visit]:
        """The run stopped: the people still in view become visits, the rest is forgotten."""
        visits = self.close(summaries, origin, STOPPED)
        # the analyzer ended every track it had; one it did not summarise is no visit
        self._tracks.clear()
        return visits

    def open_visits(self, origin: float) -> list[Visit]:
        """The visits in progress as they stand now (people in view for the minimum dwell)."""
        visits = []
        for track_id, track in self._tracks.items():
            visit = make_visit(track.so_far(track_id), track.spans, self.frame_dt, origin, self.rules, CRASHED)
            if visit is not None:
                visits.append(visit)
        return visits

    def _update_frame_dt(self, time: float) -> None:
        # live sources deliver at whatever rate the machine keeps up with: learn it
        if self._last_time is not None:
            dt = time - self._last_time
            if 0 < dt < 1.0:
                self.frame_dt += 0.05 * (dt - self.frame_dt)
        self._last_time = time

    def _purge(self, now: float) -> None:
        self._last_purge = now
        stale = [tid for tid, t in self._tracks.items() if now - t.last_seen > self.rules.forget_s]
        for tid in stale:
            del self._tracks[tid]


@dataclass(frozen=True)
class Totals:
    visits: int = 0  # OTS
    viewers: int = 0
    glances: int = 0
    dwell_s: float = 0.0  # sums
    attention_s: float = 0.0

    @property
    def attention_rate(self) -> float | None:
        return self.viewers / self.visits if self.visits else None

    @property
    def average_dwell_s(self) -> float | None:
        return self.dwell_s / self.visits if self.visits else None

    @property
    def average_attention_s(self) -> float | None:
        return self.attention_s / self.viewers if self.viewers else None

    def as_dict(self) -> dict[str, float | int | None]:
        def r(v: float | None, n: int = 3) -> float | None:
            return None if v is None else round(v, n)

        return {
            "visits": self.visits,
            "ots": self.visits,
            "viewers": self.viewers,
            "glances": self.glances,
            "attention_rate": r(self.attention_rate, 4),
            "average_dwell_s": r(self.average_dwell_s),
            "average_attention_s": r(self.average_attention_s),
            "total_dwell_s": r(self.dwell_s),
            "total_attention_s": r(self.attention_s),
        }


def totals(visits: Iterable[Visit]) -> Totals:
    vs = list(visits)
    return Totals(
        visits=len(vs),
        viewers=sum(v.viewer for v in vs),
        glances=sum(v.glances for v in vs),
        dwell_s=sum(v.dwell_s for v in vs),
        attention_s=sum(v.attention_s for v in vs),
    )


def bin_index(value: float, edges: Sequence[float]) -> int:
    return bisect.bisect_right(edges, value)


def bin_labels(edges: Sequence[float], unit: str = "s") -> list[str]:
    def f(v: float) -> str:
        return f"{v:g}"

    inner = [f"{f(a)}-{f(b)} {unit}" for a, b in zip(edges, edges[1:])]
    return [f"< {f(edges[0])} {unit}", *inner, f">= {f(edges[-1])} {unit}"]
