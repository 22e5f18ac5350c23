"""Long files in time chunks: the plan, frame-range reads, one chunk's run and the merge.

The reads and the runs use generated videos (tooling.scenes: real faces from
../shared on known paths); the merge's rules are checked on hand-made chunk results.
"""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np
import pytest

from realtime.analyzer import Analyzer, AnalyzerOptions, TrackSummary
from realtime.batch.chunks import (
    Chunk,
    ChunkResult,
    OverlapFrame,
    OverlapTrack,
    combine_ages,
    combine_genders,
    default_chunk_seconds,
    merge_chunks,
    plan_chunks,
    plan_file,
    process_chunk,
)
from realtime.errors import SourceError, UserError
from realtime.smoothing import Estimates
from realtime.sources import VideoFileSource, open_source
from realtime.streams import SharedEngines
from tests.conftest import WALKING, read_frames
from tooling import scenes

# ---------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    "frames, fps, chunk_s, overlap_s",
    [(600, 25.0, 6.0, 2.0), (601, 25.0, 6.0, 2.0), (900_000, 25.0, 600.0, 4.0), (7_777, 29.97, 60.0, 3.0), (151, 25.0, 3.0, 1.5)],
)
def test_owned_ranges_tile_the_file_and_neighbours_share_the_overlap(frames, fps, chunk_s, overlap_s):
    chunks = plan_chunks(frames, fps, chunk_s, overlap_s)
    owned = np.zeros(frames, int)
    for chunk in chunks:
        owned[chunk.own_start : chunk.own_end] += 1
        assert chunk.start_frame <= chunk.own_start < chunk.own_end <= chunk.end_frame
        assert chunk.own_end - chunk.own_start <= round(chunk_s * fps)
    assert (owned == 1).all()
    assert [c.index for c in chunks] == list(range(len(chunks))) and [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[0].start_frame == 0 and chunks[-1].end_frame == frames
    lengths = [c.own_end - c.own_start for c in chunks]
    assert max(lengths) - min(lengths) <= 1  # equal shares: no stub chunk at the end
    for before, after in pairwise(chunks):
        shared = range(after.start_frame, before.end_frame)
        # (an overlap of exactly half a chunk may lose a frame to rounding)
        assert len(shared) == min(round(overlap_s * fps), round(chunk_s * fps) // 2) == before.overlap
        assert before.tail == after.head == shared
        # the boundary is in the middle of what both read
        assert abs((after.own_start - shared.start) - (shared.stop - after.own_start)) <= 1


def test_ten_hour_file_in_ten_minute_chunks():
    assert default_chunk_seconds(10 * 3600, workers=2) == 600
    assert len(plan_chunks(10 * 3600 * 25, 25.0, default_chunk_seconds(10 * 3600, 2))) == 60
    # a short run is cut finer, so that every worker has work, but not below MIN_CHUNK_S
    assert default_chunk_seconds(40 * 60, workers=2) == 300
    assert default_chunk_seconds(60, workers=8) == 120


def test_short_file_is_one_chunk_without_overlap():
    (chunk,) = plan_chunks(100, 25.0, 6.0, 2.0)
    assert chunk == Chunk(0, 0, 100, 0, 100, 0, last=True)
    assert len(chunk.head) == len(chunk.tail) == 0 and chunk.owns(100_000)  # the last chunk reads to the end


@pytest.mark.parametrize("chunk_s, overlap_s", [(6.0, 6.0), (6.0, 10.0), (6.0, 3.5)])
def test_overlap_beyond_half_a_chunk_is_refused(chunk_s, overlap_s):
    with pytest.raises(UserError, match=r"chunk overlap \(.* s\) must be at most half the chunk length"):
        plan_chunks(1000, 25.0, chunk_s, overlap_s)


@pytest.mark.parametrize("chunk_s, overlap_s", [(0.0, 0.0), (-5.0, 1.0), (float("nan"), 1.0), (6.0, -1.0), (6.0, float("nan"))])
def test_bad_chunk_lengths_are_refused(chunk_s, overlap_s):
    with pytest.raises(UserError, match="chunk"):
        plan_chunks(1000, 25.0, chunk_s, overlap_s)


# ---------------------------------------------------------------- frame-range reads


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, object]:
    """The same 3 s scene as MPEG-4 part 2 and as H.264 (B-frames, one key frame), and a GIF."""
    folder = tmp_path_factory.mktemp("ranges")
    scenario = scenes.make_scenario(5, n_people=2, width=320, height=240, seconds=3.0)
    videos = {"gif": WALKING}
    for codec in ("mp4v", "h264"):
        videos[codec] = folder / f"scene_{codec}.mp4"
        scenes.render(scenario, videos[codec], codec=codec)  # type: ignore[arg-type]
    return videos


@pytest.mark.parametrize("kind", ["mp4v", "h264", "gif"])
def test_frame_range_gives_the_frames_of_a_sequential_read(encoded, kind):
    path = encoded[kind]
    reference = read_frames(path)
    n = len(reference)
    for start, end in [(0, 5), (1, 4), (n // 3, n // 3 + 7), (n - 6, n), (n - 3, None), (n // 2, n + 50)]:
        with VideoFileSource(path, start, end) as source:
            frames = list(source)
        expected = list(range(start, min(n, end or n)))
        assert [f.index for f in frames] == expected, (kind, start, end)
        assert source.info.frame_count == len(expected)
        assert [f.time for f in frames] == pytest.approx([i / source.info.fps for i in expected])
        for frame in frames:
            assert np.array_equal(frame.image, reference[frame.index]), (kind, start, frame.index)


def test_frame_range_past_the_end_or_of_a_folder_is_refused(encoded, tmp_path):
    with pytest.raises(SourceError, match="cannot read frame 500"):
        VideoFileSource(encoded["mp4v"], 500)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError, match="a frame range needs a video file"):
        open_source(str(tmp_path), start_frame=3)
    with pytest.raises(ValueError, match="frame range"):
        VideoFileSource(encoded["mp4v"], 10, 10)


# ------------------------------------------------------- chunks run and merged back


@pytest.fixture(scope="module")
def engines(model_path):
    """What a batch worker holds: the detector engine and the model, loaded once."""
    with SharedEngines.create(AnalyzerOptions().detector, model_path, "cpu") as engines:
        yield engines


def fresh_analyzer(engines: SharedEngines, fps: float) -> Analyzer:
    """What a batch worker makes per chunk: a new analyzer on the shared engine and model."""
    return engines.analyzer(AnalyzerOptions(fps=fps, device="cpu"))


@pytest.fixture(scope="module")
def crossing(tmp_path_factory, engines):
    """Two people in view across the boundary of a 6 s scene cut into two 3 s chunks sharing 1 s."""
    path = tmp_path_factory.mktemp("crossing") / "two.mp4"
    truth = scenes.render(scenes.make_scenario(3, n_people=2, width=320, height=240, seconds=6.0), path)
    info, chunks = plan_file(path, chunk_s=3.0, overlap_s=1.0)
    runs = []
    for plan in ([Chunk(0, 0, info.frame_count, 0, info.frame_count, 0, last=True)], chunks):
        results = []
        for chunk in plan:
            with fresh_analyzer(engines, info.fps) as analyzer:
                results.append(process_chunk(analyzer, path, chunk))
        runs.append(results)
    return truth, chunks, runs[0], runs[1]


def test_person_crossing_a_boundary_is_one_person_with_the_files_times(crossing):
    truth, chunks, whole, chunked = crossing
    assert len(chunks) == 2 and [r.frames for r in chunked] == [c.end_frame - c.start_frame for c in chunks]
    boundary = chunks[1].own_start
    # both people are in view on both sides of the boundary
    assert all(p["first_frame"] < boundary - 30 and p["last_frame"] > boundary + 30 for p in truth["people"])
    whole_people = [m.person for m in merge_chunks(whole)]
    merged = merge_chunks(chunked)
    assert len(merged) == len(whole_people) == len(truth["people"]) == 2
    assert sum(len(r.people) for r in chunked) == 4  # each person was a track in each chunk
    for m, alone in zip(merged, whole_people):
        assert [ref[0] for ref in m.parts] == [0, 1]
        person = m.person
        assert person.first_time < boundary / 25.0 < person.last_time
        # as the whole-file run saw them (measured: the same frames), frames counted once
        assert person.first_frame == alone.first_frame and abs(person.last_frame - alone.last_frame) <= 2
        assert abs(person.frames_seen - alone.frames_seen) <= 2
        assert person.gender == alone.gender is not None
    for m, true in zip(merged, truth["people"]):
        assert abs(m.person.first_frame - true["first_frame"]) <= 2 and abs(m.person.last_frame - true["last_frame"]) <= 2


def test_a_used_analyzer_is_refused(encoded, engines):
    with fresh_analyzer(engines, 25.0) as analyzer:
        analyzer.process(read_frames(encoded["mp4v"], 1)[0], 0, 0.0)
        with pytest.raises(ValueError, match="fresh Analyzer"):
            process_chunk(analyzer, encoded["mp4v"], plan_chunks(75, 25.0, 6.0, 2.0)[0])


def test_overlap_boxes_are_only_of_the_shared_frames(crossing):
    chunked = crossing[3]
    for result in chunked:
        shared = set(result.chunk.head) | set(result.chunk.tail)
        assert result.overlaps and all(f.frame in shared for t in result.overlaps for f in t.frames)
        assert {t.track_id for t in result.overlaps} <= {p.track_id for p in result.people}


# --------------------------------------------------------------- the merge's rules


CHUNKS = plan_chunks(200, 25.0, 4.0, 1.0)  # boundary at frame 100, shared frames 88..112


def summary(track_id: int, first: int, last: int, inferred: int = 10, estimates: Estimates = Estimates()) -> TrackSummary:
    return TrackSummary(track_id, first, last, first / 25.0, last / 25.0, last - first + 1, inferred, estimates)


def track(track_id: int, frames: range, x: float) -> OverlapTrack:
    return OverlapTrack(track_id, tuple(OverlapFrame(f, (x, 50.0, x + 60.0, 110.0), True, False) for f in frames))


def result(chunk: Chunk, people: list[TrackSummary], overlaps: list[OverlapTrack]) -> ChunkResult:
    return ChunkResult(chunk, tuple(people), tuple(overlaps), chunk.end_frame - chunk.start_frame, False)


def test_two_people_far_apart_are_never_fused():
    # one leaves on the left just before the boundary, another enters on the right just after
    before = result(CHUNKS[0], [summary(1, 20, 105)], [track(1, range(88, 106), 10.0)])
    after = result(CHUNKS[1], [summary(1, 95, 180)], [track(1, range(95, 112), 250.0)])
    merged = merge_chunks([before, after])
    assert [m.parts for m in merged] == [((0, 1),), ((1, 1),)]
    assert [m.person.track_id for m in merged] == [1, 2]


def test_side_by_side_people_are_each_joined_to_themselves():
    before = result(CHUNKS[0], [summary(1, 10, 112), summary(2, 30, 112)], [track(1, range(88, 113), 10.0), track(2, range(88, 113), 90.0)])
    # the next chunk numbers them the other way round, and its left box is a little off
    after = result(
        CHUNKS[1], [summary(1, 88, 150), summary(2, 89, 190)], [track(1, range(88, 112), 90.0), track(2, range(89, 112), 20.0)]
    )
    merged = merge_chunks([after, before])  # in any order
    assert [m.parts for m in merged] == [((0, 1), (1, 2)), ((0, 2), (1, 1))]
    left, right = (m.person for m in merged)
    assert (left.first_frame, left.last_frame, right.first_frame, right.last_frame) == (10, 190, 30, 150)
    # frames counted once: each chunk's own, 10..99 from the first and 100..190 from the second
    assert left.frames_seen == 90 + 91 and right.frames_seen == 70 + 51


def test_person_only_inside_the_overlap_is_kept_once():
    # seen from frame 104 (owned by the second chunk) to 110; the boxes disagree too much to match
    before = result(CHUNKS[0], [summary(1, 104, 110)], [track(1, range(104, 111), 10.0)])
    after = result(CHUNKS[1], [summary(1, 104, 110)], [track(1, range(104, 111), 45.0)])
    (kept,) = merge_chunks([before, after])
    assert kept.parts == ((1, 1),)


def test_merge_needs_every_chunk():
    with pytest.raises(ValueError, match="every chunk of the file once"):
        merge_chunks([result(CHUNKS[1], [], [])])


def test_estimates_combine_as_the_smoother_would():
    # the smoother's mean of calibrated logits: two parts each 90% sure of "male" are 90% together
    assert combine_genders([("male", 0.9, 10), ("male", 0.9, 10)]) == ("male", pytest.approx(0.9, abs=1e-3))
    # weighted by inferences: 10 of a 95% "male" against 5 of a 95% "female" leave "male"
    # below the threshold, held as the first part showed it, at 72.7%
    assert combine_genders([("male", 0.95, 10), ("female", 0.95, 5)]) == ("male", pytest.approx(0.727, abs=1e-3))
    # a part that showed no gender was undecided: it dilutes the evidence
    assert combine_genders([("female", 0.85, 5), (None, None, 10)]) == ("female", pytest.approx(0.641, abs=1e-3))
    assert combine_genders([(None, None, 1.0), (None, None, 1.0)]) == (None, None)
    # age: weighted by inferences; the spread widens when the parts disagree
    assert combine_ages([(30.0, 2.0, 10), (40.0, 2.0, 10)]) == (35.0, 5.4)
    assert combine_ages([(30.0, 2.0, 30), (40.0, 2.0, 10)])[0] == 32.5
    assert combine_ages([(None, None, 1), (28.0, 3.0, 5)]) == (28.0, 3.0)
