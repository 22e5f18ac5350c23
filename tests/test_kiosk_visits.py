"""Kiosk visit logic: brackets, glances, dwell, the trade's figures (pure functions)."""

from __future__ import annotations

import pytest

from realtime.analyzer import FaceResult, FrameResult, TrackSummary
from realtime.kiosk.attention import project
from realtime.kiosk.visits import (
    ATTENTION_EDGES,
    DWELL_EDGES,
    AgeBrackets,
    VisitBuilder,
    VisitRules,
    attentive_spans,
    bin_index,
    bin_labels,
    bracket_order,
    glance_durations,
    make_visit,
    totals,
)
from realtime.scheduling import FaceQuality
from realtime.smoothing import Estimates

FPS = 10.0
DT = 1 / FPS


def summary(track_id: int = 1, first: float = 0.0, last: float = 4.9, age: float | None = 30.0, gender: str | None = "female") -> TrackSummary:
    return TrackSummary(
        track_id=track_id, first_frame=int(first * FPS), last_frame=int(last * FPS), first_time=first, last_time=last,
        frames_seen=int((last - first) * FPS) + 1, frames_inferred=5,
        estimates=Estimates(age=age, age_std=2.0, gender=gender, gender_confidence=0.9 if gender else None),
    )


def test_default_brackets_are_the_trades():
    b = AgeBrackets()
    assert b.labels == ("under 18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
    assert [b.label(a) for a in (5, 17.9, 18, 24.9, 25, 44.5, 64.99, 65, 90)] == [
        "under 18", "under 18", "18-24", "18-24", "25-34", "35-44", "55-64", "65+", "65+"]
    assert b.label(None) == "unknown"


def test_brackets_parse_and_refuse_nonsense():
    assert AgeBrackets.parse("20, 40,60").labels == ("under 20", "20-39", "40-59", "60+")
    for bad in ("", "18,18", "30,20", "x,20", "0,10", "18,200"):
        with pytest.raises(ValueError):
            AgeBrackets.parse(bad)


def test_bracket_order_sorts_any_configuration():
    labels = ["65+", "unknown", "18-24", "under 18", "25-34"]
    assert sorted(labels, key=bracket_order) == ["under 18", "18-24", "25-34", "65+", "unknown"]


def test_attentive_frames_group_into_spans_across_flicker():
    times = [0.0, 0.1, 0.2, 0.4, 0.5, 1.5, 1.6]  # one missed frame at 0.3 is bridged, 0.5 -> 1.5 is not
    assert attentive_spans(times, merge_gap_s=0.3) == [(0.0, 0.5), (1.5, 1.6)]
    assert attentive_spans([], 0.3) == []


def test_glances_must_last_the_minimum():
    spans = [(0.0, 0.5), (1.5, 1.6), (3.0, 5.0)]
    # each frame stands for one frame interval: 0.0..0.5 at 10 fps is 0.6 s
    assert glance_durations(spans, DT, min_glance_s=0.5) == pytest.approx([0.6, 2.1])


def test_short_tracks_are_not_visits():
    rules = VisitRules(min_dwell_s=2.0)
    assert make_visit(summary(last=1.8), [], DT, 0.0, rules) is None  # 1.9 s seen
    visit = make_visit(summary(last=1.9), [], DT, 0.0, rules)  # 2.0 s
    assert visit is not None and visit.dwell_s == pytest.approx(2.0)


def test_visit_fields_from_summary_and_spans():
    origin = 1_700_000_000.0
    visit = make_visit(summary(first=1.0, last=5.9, age=23.6, gender="male"), [(2.0, 2.9), (4.0, 4.1)], DT, origin, VisitRules())
    assert visit is not None
    assert visit.start == origin + 1.0 and visit.end == pytest.approx(origin + 6.0)
    assert visit.dwell_s == pytest.approx(5.0)
    assert visit.glances == 1 and visit.attention_s == pytest.approx(1.0) and visit.viewer
    assert visit.bracket == "18-24" and visit.gender == "male" and visit.gender_confidence == 0.9


def test_unknown_gender_and_age():
    visit = make_visit(summary(age=None, gender=None), [], DT, 0.0, VisitRules())
    assert visit is not None
    assert (visit.bracket, visit.gender, visit.gender_confidence, visit.viewer) == ("unknown", "unknown", None, False)


def test_totals_follow_the_trade_definitions():
    rules = VisitRules()
    looked = make_visit(summary(1, last=9.9), [(0.0, 2.9)], DT, 0.0, rules)  # 10 s dwell, 3 s attention
    also = make_visit(summary(2, last=3.9), [(0.0, 0.9)], DT, 0.0, rules)  # 4 s dwell, 1 s attention
    passed = make_visit(summary(3, last=5.9), [], DT, 0.0, rules)  # 6 s dwell, no glance
    t = totals([looked, also, passed])
    assert (t.visits, t.viewers) == (3, 2)
    assert t.attention_rate == pytest.approx(2 / 3)
    assert t.average_dwell_s == pytest.approx(20 / 3)
    assert t.average_attention_s == pytest.approx(2.0)  # per viewer, not per visit
    assert totals([]).attention_rate is None


def test_histogram_bins():
    assert bin_index(2.0, DWELL_EDGES) == 0 and bin_index(5.0, DWELL_EDGES) == 1 and bin_index(1000, DWELL_EDGES) == len(DWELL_EDGES)
    labels = bin_labels(ATTENTION_EDGES)
    assert labels[0] == "< 1 s" and labels[1] == "1-2 s" and labels[-1] == ">= 30 s"
    assert len(labels) == len(ATTENTION_EDGES) + 1


def face(track_id: int, yaw: float) -> FaceResult:
    quality = FaceQuality(size_px=80, sharpness=50, frontal=1.0, score=0.8, usable=True)
    kps = tuple(project(yaw, 0.0, scale=0.2, centre=(100.0 * track_id, 100.0)))
    return FaceResult(track_id, (0, 0, 1, 1), 0.9, Estimates(30, 2.0, "female", 0.9), False, quality, keypoints=kps)


def test_builder_measures_glances_from_head_pose():
    builder = VisitBuilder(VisitRules(), FPS)
    visits = []
    for i in range(60):  # 6 s: looks for 2 s, away for 2 s, back for 1 s, away for 1 s
        t = i * DT
        yaw = 0.0 if t < 2.0 or 4.0 <= t < 5.0 else 60.0
        visits += builder.observe(FrameResult(i, t, [face(7, yaw)], []), origin=100.0)
    assert visits == [] and builder.people_now == 1
    visits = builder.close([summary(7, 0.0, 5.9)], origin=100.0)
    assert len(visits) == 1
    v = visits[0]
    assert v.glances == 2 and v.attention_s == pytest.approx(3.0)
    assert v.start == 100.0 and v.dwell_s == pytest.approx(6.0)
    assert builder.people_now == 0


def test_builder_forgets_tracks_that_never_become_summaries():
    builder = VisitBuilder(VisitRules(forget_s=5.0), FPS)
    builder.observe(FrameResult(0, 0.0, [face(1, 0.0)], []), 0.0)  # detector noise: never summarised
    for i in range(1, 80):
        builder.observe(FrameResult(i, i * DT, [face(2, 0.0)], []), 0.0)
    assert builder.people_now == 1  # memory stays bounded on a months-long run


def test_builder_learns_the_live_frame_interval():
    builder = VisitBuilder(VisitRules(), fps=30.0)  # the camera claims 30, the machine keeps 10
    for i in range(200):
        builder.observe(FrameResult(i, i * 0.1, [], []), 0.0)
    assert builder.frame_dt == pytest.approx(0.1, rel=0.02)
