"""The kiosk session: frame results to stored visits, gaps and the live count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from realtime.analyzer import FrameResult, TrackSummary
from realtime.kiosk.session import KioskSession
from realtime.kiosk.store import GapRow, KioskStore, StoreReader
from realtime.kiosk.visits import VisitRules
from tests.kiosk_results import FPS, T0, Clock, face, summary



@dataclass
class FakeStats:
    gaps: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class FakeLiveSource:
    stats: FakeStats = field(default_factory=FakeStats)




def run_frames(session: KioskSession, clock: Clock, seconds: float, speed: float, finished_at: dict[int, TrackSummary]):
    """Frames of one person (track 1) at `speed` times real time."""
    n = int(seconds * FPS)
    for i in range(n):
        t = i / FPS
        clock.t = T0 + t / speed
        done = [finished_at[i]] if i in finished_at else []
        session.frame(FrameResult(i, t, [face(1)] if not done else [], done))


def test_a_file_read_fast_is_never_stamped_in_the_future(tmp_path):
    clock = Clock(T0)
    store = KioskStore.open(tmp_path, now=T0)
    session = KioskSession(store, VisitRules(), FPS, clock=clock)
    run_frames(session, clock, seconds=10, speed=5.0, finished_at={80: summary(1, 0.0, 7.9)})
    store.close(now=clock.t)
    (visit,) = StoreReader(tmp_path).visits(0, T0 + 100)
    assert visit.end <= clock.t + 1e-6
    assert visit.dwell_s == pytest.approx(8.0)  # durations stay in video time
    assert visit.attention_s == pytest.approx(8.0) and visit.glances == 1


def test_people_in_view_at_the_end_become_visits(tmp_path):
    clock = Clock(T0)
    store = KioskStore.open(tmp_path, now=T0)
    session = KioskSession(store, VisitRules(), FPS, clock=clock)
    run_frames(session, clock, seconds=5, speed=1.0, finished_at={})
    time.sleep(store.options.heartbeat_s + 0.05)  # the live row is written at the heartbeat
    session.frame(FrameResult(50, 5.0, [face(1)], []))
    assert StoreReader(tmp_path).live(now=clock.t).faces == 1
    session.final([summary(1, 0.0, 5.0)])
    store.close(now=clock.t)
    assert session.visits == 1 and session.viewers == 1
    assert len(StoreReader(tmp_path).visits(0, T0 + 100)) == 1


def test_camera_gaps_reach_the_store_in_wall_time(tmp_path):
    clock = Clock(T0)
    source = FakeLiveSource()
    store = KioskStore.open(tmp_path, now=T0)
    session = KioskSession(store, VisitRules(), FPS, source=source, clock=clock)  # type: ignore[arg-type]
    session.frame(FrameResult(0, 0.0, [], []))
    source.stats.gaps.append((3.0, 12.5))
    clock.t = T0 + 13.0
    session.frame(FrameResult(1, 13.0, [], []))
    session.frame(FrameResult(2, 13.1, [], []))  # recorded once
    store.close(now=clock.t)
    assert StoreReader(tmp_path).gaps(0, T0 + 100) == [GapRow(run_id=1, start=T0 + 3.0, end=T0 + 12.5, kind="camera")]
