"""The kiosk session: frame results to stored visits, gaps and the live count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from realtime.analyzer import FrameResult, TrackSummary
from realtime.kiosk.session import KioskSession
from realtime.kiosk.queries import GapRow, StoreReader
from realtime.kiosk.store import KioskStore
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
    assert StoreReader(tmp_path).gaps(0, T0 + 100) == [GapRow(run_id=1, camera="default", start=T0 + 3.0, end=T0 + 12.5, kind="camera")]


def test_one_run_records_two_cameras_into_one_store(tmp_path):
    from realtime.errors import UserError
    from realtime.kiosk.session import KioskOptions, KioskRun
    from realtime.kiosk.store import StoreOptions
    from realtime.sources import open_source
    from realtime.summary import ModelInfo, RunSummary
    from tests.conftest import WEBCAM

    options = KioskOptions(tmp_path, store=StoreOptions(heartbeat_s=0.0))
    with open_source(str(WEBCAM)) as source, KioskRun.open(options, "entrance, aisle", console=None) as run:
        entrance, aisle = run.session_for(source, "entrance"), run.session_for(source, "aisle")
        with pytest.raises(UserError, match="camera id 'aisle'"):
            run.session_for(source, "aisle")  # the trackers' ids would clash
        for i in range(60):
            t = i / FPS
            # each camera's tracker numbers its people from 1: the store keeps them apart
            entrance.frame(FrameResult(i, t, [face(1)] if i < 50 else [], [summary(1, 0.0, 4.9)] if i == 50 else []))
            aisle.frame(FrameResult(i, t, ([face(1)] if i < 30 else []) + [face(2)], [summary(1, 0.0, 2.9)] if i == 30 else []))
        live = StoreReader(tmp_path).live()
        assert [(c.camera, c.faces) for c in live.cameras] == [("aisle", 1), ("entrance", 0)] and live.faces == 1
        entrance.final([])
        aisle.final([summary(2, 0.0, 5.9)])
        summary_ = RunSummary("two", "file", 120, 6.0, 1.0, 120.0, 3, 0, [], ModelInfo("m", "m", "1"), "mediapipe", 1, False)
        run.ended(summary_)
        line = run.result_line(summary_)
    assert "3 visits (3 viewers) [entrance: 1, aisle: 2]" in line

    reader = StoreReader(tmp_path)
    now = time.time() + 60
    assert sorted((v.camera, v.track_id) for v in reader.visits(0, now)) == [("aisle", 1), ("aisle", 2), ("entrance", 1)]
    assert reader.cameras() == ("aisle", "entrance")
    assert [(r.frames, r.visits, r.stop_reason) for r in reader.runs(0, now)] == [(120, 3, "finished")]
    # the store's figures are the sums of its cameras', none counted twice
    by_camera = {c: StoreReader(tmp_path, camera=c) for c in reader.cameras()}
    total = reader.totals(0, now)
    assert (total.visits, total.viewers) == (3, 3)
    for figure in ("visits", "viewers", "glances", "dwell_s", "attention_s"):
        assert getattr(total, figure) == pytest.approx(sum(getattr(r.totals(0, now), figure) for r in by_camera.values()))
    assert reader.camera_totals(0, now) == {c: r.totals(0, now) for c, r in by_camera.items()}
    assert by_camera["aisle"].totals(0, now).dwell_s == pytest.approx(3.0 + 6.0, abs=0.1)
    for metric in ("dwell", "attention"):
        assert reader.histogram(metric, 0, now) == [sum(n) for n in zip(*(r.histogram(metric, 0, now) for r in by_camera.values()))]
    assert {c: sum(g.total for g in r.brackets(0, now).values()) for c, r in by_camera.items()} == {"aisle": 2, "entrance": 1}
    assert [v.camera for v in by_camera["entrance"].visits(0, now)] == ["entrance"]
    assert not reader.live().running
