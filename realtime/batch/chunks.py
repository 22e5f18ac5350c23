"""Long files in time chunks: the plan, one chunk's run, and its people merged back into the file's.

One 10-hour file processed whole keeps one worker busy for hours while the others idle,
so a long file is split into chunks that any worker can take. Each chunk is run by a
fresh Analyzer; neighbouring chunks both read `overlap` frames centred on the boundary
between them, so a person in view at a boundary is a track in both chunks, and the two
tracks are recognised as one person by their boxes in those shared frames (the same
detector on the same pixels finds the same face in the same place) and merged.

    owned:  |---- chunk 0 ----|---- chunk 1 ----|---- chunk 2 ----|
    read:   |---- chunk 0 -------|
                           |-------- chunk 1 ------|
                                             |-------- chunk 2 ---|
                           |--| shared: `overlap` frames around a boundary

Every frame is owned by exactly one chunk (the owned ranges tile the file). What a
chunk reports is in the file's own frame numbers and times (sources.VideoFileSource
keeps them), so merged people carry the file's times. Counting rules, each "once":
a frame counts for the chunk that owns it (frames seen and inferred of a merged
person), and a person seen only inside a shared region, whom no track of the other
chunk matched, is kept by the chunk that owns the frame where they were first seen.
docs/benchmarks.md measures how often the merge is right (tooling/chunk_merge_eval.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import numpy as np
from rich.console import Console

# scipy comes with supervision (a dependency), so the optimal assignment is always there
from scipy.optimize import linear_sum_assignment

from ..analyzer import Analyzer, FrameResult, TrackSummary
from ..errors import UserError
from ..runner import RunOptions, run
from ..sinks import Sink
from ..smoothing import Estimates, Gender, SmoothingOptions, gender_estimate, logit
from ..sources import SourceInfo, VideoFileSource

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
TrackRef = tuple[int, int]  # (chunk index, the chunk's track id)

# The longest chunk by default: a 10-hour file becomes 60 chunks, enough to keep 60
# workers busy on it, and the run's tail (workers idle while the last chunks finish) is
# at most one chunk, 10 minutes of video. Longer chunks save nothing measurable: the
# per-chunk cost is a seek and a fresh analyzer (well under a second) plus the overlap.
MAX_CHUNK_S = 600.0
# The shortest chunk by default: the overlap is read twice, so a 2-minute chunk with a
# 4 s overlap costs 3% more decoding and analysis, and each boundary is a chance to
# split a person (tooling/chunk_merge_eval.py).
MIN_CHUNK_S = 120.0
# Chunks per worker aimed at for a small run: the idle tail is then about a quarter of
# a worker's share of the video.
CHUNKS_PER_WORKER = 4
# Seconds both neighbours read around a boundary. A fresh tracker confirms a face after
# 3 detections (0.12 s at 25 fps), so each side has long since settled by the middle;
# the rest is margin for a face hidden (turned away, occluded) near the boundary.
DEFAULT_OVERLAP_S = 4.0
# Two tracks are one person when their boxes in the shared frames overlap by this much
# on average: both chunks run the same detector on the same pixels, so one face's two
# tracks measure about 0.9-1.0 there, and two people in separate places 0.
MERGE_IOU = 0.5
MIN_COMMON_FRAMES = 3  # shared frames in which both tracks have a box


@dataclass(frozen=True)
class Chunk:
    """The frames a chunk reads, [start_frame, end_frame), and those it owns, [own_start, own_end)."""

    index: int
    start_frame: int
    end_frame: int
    own_start: int
    own_end: int
    overlap: int  # frames read by both this chunk and a neighbour, around each inner boundary
    # the file's final chunk reads on to the end of the file, should it hold more frames
    # than its header said, and owns them
    last: bool

    @property
    def head(self) -> range:
        """The frames shared with the previous chunk."""
        return range(self.start_frame, self.start_frame + self.overlap) if self.index > 0 else range(0)

    @property
    def tail(self) -> range:
        """The frames shared with the next chunk."""
        return range(0) if self.last else range(self.end_frame - self.overlap, self.end_frame)

    def owns(self, frame: int) -> bool:
        return self.own_start <= frame and (self.last or frame < self.own_end)


def default_chunk_seconds(total_seconds: float, workers: int) -> float:
    """The chunk length for a run of `total_seconds` of video on `workers` workers.

    About CHUNKS_PER_WORKER chunks per worker, between MIN_CHUNK_S and MAX_CHUNK_S: an
    archive gets 10-minute chunks (a 10-hour file is 60 of them); a single 40-minute
    file on 2 workers gets 5-minute chunks, 8 of them, rather than two workers taking
    one file each while the other files wait.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    wanted = total_seconds / (CHUNKS_PER_WORKER * workers)
    return float(min(MAX_CHUNK_S, max(MIN_CHUNK_S, wanted)))


def check_chunking(chunk_s: float, overlap_s: float) -> None:
    """Refuse a chunk length and overlap that cannot tile a file (UserError, one line)."""
    if not 0.0 < chunk_s < math.inf:
        raise UserError(f"chunk length must be a positive number of seconds, got {chunk_s}")
    if not 0.0 <= overlap_s < math.inf:
        raise UserError(f"chunk overlap must be zero or more seconds, got {overlap_s}")
    if overlap_s * 2 > chunk_s:
        # beyond half a chunk, the shared regions of one chunk's two boundaries would meet
        raise UserError(f"chunk overlap ({overlap_s:g} s) must be at most half the chunk length ({chunk_s:g} s)")


def plan_chunks(frame_count: int, fps: float, chunk_s: float, overlap_s: float = DEFAULT_OVERLAP_S) -> list[Chunk]:
    """Chunks of at most `chunk_s` seconds, all of one length (to a frame), tiling `frame_count` frames.

    A file no longer than one chunk is one chunk. Each inner boundary is shared by its
    two chunks over `overlap_s` seconds centred on it.
    """
    check_chunking(chunk_s, overlap_s)
    if frame_count < 1:
        raise ValueError(f"frame count must be at least 1, got {frame_count}")
    if not 0.0 < fps < math.inf:
        raise ValueError(f"frame rate must be a positive number, got {fps}")
    chunk_frames = max(1, round(chunk_s * fps))
    count = math.ceil(frame_count / chunk_frames)
    overlap = 0 if count == 1 else min(round(overlap_s * fps), chunk_frames // 2)
    before, after = overlap // 2, overlap - overlap // 2
    bounds = [round(i * frame_count / count) for i in range(count + 1)]
    chunks = []
    for i in range(count):
        start = bounds[i] - (before if i > 0 else 0)
        end = bounds[i + 1] + (after if i < count - 1 else 0)
        chunks.append(Chunk(i, start, end, bounds[i], bounds[i + 1], overlap, last=i == count - 1))
    return chunks


def plan_file(path: Path, chunk_s: float, overlap_s: float = DEFAULT_OVERLAP_S) -> tuple[SourceInfo, list[Chunk]]:
    """The file's source info and its chunks (SourceError if it is not a readable video).

    A file whose frame count is unknown is one chunk, read to its end.
    """
    check_chunking(chunk_s, overlap_s)
    with VideoFileSource(Path(path)) as source:
        info = source.info
    return info, plan_chunks(info.frame_count or 1, info.fps, chunk_s, overlap_s)


# ---------------------------------------------------------------------- one chunk


@dataclass(frozen=True)
class OverlapFrame:
    frame: int
    box: Box
    detected: bool  # found by the detector in this frame (not moved on by its velocity)
    inferred: bool  # the model ran on the face in this frame


@dataclass(frozen=True)
class OverlapTrack:
    """A track's boxes in the frames the chunk shares with a neighbour, in frame order."""

    track_id: int
    frames: tuple[OverlapFrame, ...]


@dataclass(frozen=True)
class ChunkResult:
    """What a chunk's run leaves for the merge: small (no images), sent back by a worker as is."""

    chunk: Chunk
    people: tuple[TrackSummary, ...]  # the chunk's tracks, in the file's frames and times
    overlaps: tuple[OverlapTrack, ...]  # those of `people` in view in a shared region
    frames: int  # frames processed
    interrupted: bool  # stopped by a signal: the chunk is incomplete


class _OverlapRecorder:
    """Collects every face's box in the chunk's shared frames, from the run's results."""

    def __init__(self, chunk: Chunk, detect_every: int) -> None:
        self.chunk, self.detect_every = chunk, detect_every
        self._frames: dict[int, list[OverlapFrame]] = defaultdict(list)

    def __call__(self, result: FrameResult) -> None:
        index = result.frame_index
        if index not in self.chunk.head and index not in self.chunk.tail:
            return
        # a fresh analyzer detects on its first frame and every detect_every-th after it
        detected = (index - self.chunk.start_frame) % self.detect_every == 0
        for face in result.faces:
            self._frames[face.track_id].append(OverlapFrame(index, face.box, detected, face.inferred))

    def tracks(self, kept: set[int]) -> tuple[OverlapTrack, ...]:
        """Those of the tracks that became people (shorter ones are detector noise)."""
        return tuple(OverlapTrack(t, tuple(f)) for t, f in sorted(self._frames.items()) if t in kept)


def process_chunk(
    analyzer: Analyzer,
    path: Path,
    chunk: Chunk,
    sinks: Sequence[Sink] = (),
    options: RunOptions = RunOptions(progress=False),
    on_result: Callable[[FrameResult], None] | None = None,
    console: Console | None = None,
) -> ChunkResult:
    """Runs `analyzer` over the chunk's frames of `path` through `runner.run`.

    `analyzer` must be fresh (no frame seen): a chunk's tracks start with the chunk.
    Outputs of `options`, `sinks` and stop signals behave as in run_camera.py, with the
    file's frame numbers and times; `on_result` sees every frame's result (progress).
    Raises what `run` raises (SourceError for an unreadable file or range).
    """
    if analyzer.frames:
        raise ValueError("process_chunk needs a fresh Analyzer: this one has already processed frames")
    recorder = _OverlapRecorder(chunk, analyzer.detect_every)

    def observe(result: FrameResult) -> None:
        recorder(result)
        if on_result is not None:
            on_result(result)

    end = None if chunk.last else chunk.end_frame
    with VideoFileSource(Path(path), chunk.start_frame, end) as source:
        summary = run(source, analyzer, replace(options, keep_people=True), console, observe, sinks)
    people = tuple(summary.people)
    overlaps = recorder.tracks({p.track_id for p in people})
    return ChunkResult(chunk, people, overlaps, summary.frames, summary.interrupted)


# ---------------------------------------------------------------------- the merge


@dataclass(frozen=True)
class MergedPerson:
    """One person of the file: `person` in the file's frames and times, numbered 1, 2, 3...
    in order of appearance; `parts` the chunk tracks it was made of, in chunk order."""

    person: TrackSummary
    parts: tuple[TrackRef, ...]


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_person_score(a: OverlapTrack, b: OverlapTrack) -> float:
    """Mean IoU of the two tracks' boxes over the shared frames where both have one (0 under MIN_COMMON_FRAMES)."""
    boxes = {f.frame: f.box for f in b.frames}
    ious = [box_iou(f.box, boxes[f.frame]) for f in a.frames if f.frame in boxes]
    return float(np.mean(ious)) if len(ious) >= MIN_COMMON_FRAMES else 0.0


def match_boundary(before: Sequence[OverlapTrack], after: Sequence[OverlapTrack], min_iou: float = MERGE_IOU) -> list[tuple[int, int]]:
    """Pairs (track before, track after) that are one person: one-to-one, best total score, each at least `min_iou`."""
    if not before or not after:
        return []
    scores = np.array([[same_person_score(a, b) for b in after] for a in before])
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return [(before[r].track_id, after[c].track_id) for r, c in zip(rows, cols) if scores[r, c] >= min_iou]


def merge_chunks(results: Iterable[ChunkResult], smoothing: SmoothingOptions = SmoothingOptions()) -> list[MergedPerson]:
    """The file's people from all of its chunks' results (any order, every chunk once).

    Tracks matched across a boundary become one person (a chain across as many chunks
    as the person stayed); `smoothing` must be the analyzers' (it shapes the gender).
    """
    ordered = _in_order(results)
    links: dict[TrackRef, TrackRef] = {}  # a track to its continuation in the next chunk
    for previous, result in pairwise(ordered):
        tail = [t for t in previous.overlaps if _seen_in(t, previous.chunk.tail)]
        head = [t for t in result.overlaps if _seen_in(t, result.chunk.head)]
        for a, b in match_boundary(tail, head):
            links[(previous.chunk.index, a)] = (result.chunk.index, b)
    continued = set(links.values())
    merged = []
    for result in ordered:
        for person in result.people:
            ref = (result.chunk.index, person.track_id)
            if ref in continued:
                continue  # part of a chain that began in an earlier chunk
            chain = [ref]
            while chain[-1] in links:
                chain.append(links[chain[-1]])
            if len(chain) == 1 and not _kept_alone(person, result.chunk):
                continue
            merged.append(_combine([_part(ordered, r) for r in chain], smoothing))
    merged.sort(key=lambda m: (m.person.first_frame, m.parts))
    return [replace(m, person=replace(m.person, track_id=i)) for i, m in enumerate(merged, 1)]


def _in_order(results: Iterable[ChunkResult]) -> list[ChunkResult]:
    ordered = sorted(results, key=lambda r: r.chunk.index)
    if [r.chunk.index for r in ordered] != list(range(len(ordered))):
        raise ValueError(f"merge needs every chunk of the file once, got chunks {[r.chunk.index for r in ordered]}")
    return ordered


def _seen_in(track: OverlapTrack, frames: range) -> bool:
    return any(f.frame in frames for f in track.frames)


def _kept_alone(person: TrackSummary, chunk: Chunk) -> bool:
    """An unmatched track is kept unless it lies wholly in a shared region and began in
    a frame its chunk does not own: then the neighbour that owns that frame saw the same
    person over the same frames, and keeps them."""
    inside = any(person.first_frame in r and person.last_frame in r for r in (chunk.head, chunk.tail))
    return not inside or chunk.owns(person.first_frame)


@dataclass(frozen=True)
class _Part:
    """One chunk's track of a person, with what that chunk owns of it."""

    ref: TrackRef
    summary: TrackSummary
    unowned_seen: int  # detections in shared frames owned by the neighbour
    unowned_inferred: int

    @property
    def owned_inferred(self) -> int:
        return self.summary.frames_inferred - self.unowned_inferred


def _part(ordered: list[ChunkResult], ref: TrackRef) -> _Part:
    result = ordered[ref[0]]
    summary = next(p for p in result.people if p.track_id == ref[1])
    frames = [f for t in result.overlaps if t.track_id == ref[1] for f in t.frames if not result.chunk.owns(f.frame)]
    return _Part(ref, summary, sum(f.detected for f in frames), sum(f.inferred for f in frames))


def _combine(parts: list[_Part], smoothing: SmoothingOptions) -> MergedPerson:
    """One person from their tracks in successive chunks: the file's span, each frame counted once."""
    summaries = [p.summary for p in parts]
    if len(parts) == 1:
        return MergedPerson(summaries[0], (parts[0].ref,))
    person = TrackSummary(
        track_id=summaries[0].track_id,
        first_frame=min(s.first_frame for s in summaries),
        last_frame=max(s.last_frame for s in summaries),
        first_time=min(s.first_time for s in summaries),
        last_time=max(s.last_time for s in summaries),
        # each frame counts for the chunk that owns it
        frames_seen=sum(p.summary.frames_seen - p.unowned_seen for p in parts),
        frames_inferred=sum(p.owned_inferred for p in parts),
        estimates=_combine_estimates(parts, smoothing),
    )
    return MergedPerson(person, tuple(p.ref for p in parts))


def _combine_estimates(parts: Sequence[_Part], smoothing: SmoothingOptions) -> Estimates:
    age, age_std = combine_ages([(p.summary.age, p.summary.age_std, p.summary.frames_inferred) for p in parts])
    evidence = [(p.summary.gender, p.summary.gender_confidence, float(p.owned_inferred)) for p in parts]
    gender, confidence = combine_genders(evidence, smoothing)  # type: ignore[arg-type]
    return Estimates(age=age, age_std=age_std, gender=gender, gender_confidence=confidence)


def combine_ages(parts: Sequence[tuple[float | None, float | None, int]]) -> tuple[float | None, float | None]:
    """One age from each part's (age, spread, inferences): the mean weighted by inferences,
    and the spread of the parts taken together (a mixture's: each part's own spread plus
    its distance from the mean), so parts that disagree widen it.

    A part's age is a weighted median over its own inferences, which are gone by now, so
    the median of the whole cannot be rebuilt; the weighted mean is the estimate that
    lets each part count for the evidence it rests on.
    """
    known = [(a, s or 0.0, n) for a, s, n in parts if a is not None and n > 0]
    if not known:
        return None, None
    ages, spreads, weights = (np.array(v, np.float64) for v in zip(*known))
    mean = float(np.average(ages, weights=weights))
    spread = float(np.sqrt(np.average(spreads**2 + (ages - mean) ** 2, weights=weights)))
    return mean, round(spread, 1)


def combine_genders(
    parts: Sequence[tuple[Gender | None, float | None, float]], smoothing: SmoothingOptions = SmoothingOptions()
) -> tuple[Gender | None, float | None]:
    """One gender from each part's (shown gender, its confidence, inferences to count).

    smoothing.py keeps gender as the view-weighted mean of calibrated logits of "male"
    and reports the shown label with the logistic of the mean in its favour, so each
    part's mean is recovered (to the rounding of the confidence) as +-logit(confidence).
    The whole track's mean is rebuilt as the parts' means weighted by their inferences in
    frames their chunk owns, so the overlap's inferences count once. A part that showed
    no gender was uncertain: it counts as undecided (log-odds 0) for its inferences.

    As the smoother shows: the label the evidence gives once its confidence reaches
    `gender_threshold`, else the label the first part showed, held (the whole track
    would have shown it then and kept it), with the confidence the evidence gives it.
    """
    total, weight = 0.0, 0.0
    held: Gender | None = None
    for gender, confidence, count in parts:
        weight += count
        if gender is None or confidence is None:
            continue
        held = held or gender
        towards = logit(confidence, smoothing.max_logit)
        total += count * (towards if gender == "male" else -towards)
    if held is None or weight <= 0:
        return None, None
    label, confidence = gender_estimate(total / weight)
    if confidence >= smoothing.gender_threshold:
        return label, round(confidence, 3)
    return held, round(confidence if label == held else 1.0 - confidence, 3)
