"""The driver's side of long files: a file cut into chunk jobs, its chunks' answers
gathered, and, once every chunk is back, merged into the file's events and summary.

    file = ChunkedFile.plan(path, output_dir, chunk_s, overlap_s)   # None: one chunk, run whole
    jobs = file.jobs()                   # for the actor pool, any worker each
    outcome = file.answer(chunk_answer)  # None until the file is settled
    ...the file's FileResult: done (merged, its outputs written) or failed (naming the chunk)

One failed chunk fails its whole file. An interrupted chunk leaves the file pending: a
rerun processes all of its chunks again (nothing of a file half done is kept).
chunks.py holds the plan, a chunk's run and the merge; this module only gathers and
writes, in the driver, so a file's outputs are written once, by one process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..analyzer import TrackSummary
from ..files import write_text_atomic
from ..sinks.writers import write_json_atomic
from ..smoothing import SmoothingOptions
from ..summary import RunSummary
from . import layout
from .chunks import Chunk, merge_chunks, plan_file
from .worker import ChunkJob, ChunkJobResult, FileResult


@dataclass
class ChunkedFile:
    """A long file's chunks in flight (driver state, changed as answers come)."""

    path: str
    output_dir: Path
    fps: float
    chunks: tuple[Chunk, ...]
    answers: dict[int, ChunkJobResult] = field(default_factory=dict)
    settled: bool = False  # merged, or failed: later answers of its chunks are ignored
    interrupted: bool = False  # a chunk was stopped: the file stays pending

    @classmethod
    def plan(cls, path: str, output_dir: Path, chunk_s: float, overlap_s: float) -> ChunkedFile | None:
        """The file in chunks; None when it is one chunk or cannot be read (then it runs
        whole, and a bad file fails there with its usual error)."""
        from ..errors import UserError

        try:
            info, chunks = plan_file(Path(path), chunk_s, overlap_s)
        except (UserError, OSError, ValueError):
            return None
        return cls(path, output_dir, info.fps, tuple(chunks)) if len(chunks) > 1 else None

    def jobs(self) -> list[ChunkJob]:
        return [ChunkJob(self.path, c, len(self.chunks), self.fps) for c in self.chunks]

    def owned_seconds(self, index: int) -> float:
        """The video seconds chunk `index` accounts for (each frame counts once)."""
        chunk = self.chunks[index]
        return (chunk.own_end - chunk.own_start) / self.fps

    def answer(self, answer: ChunkJobResult, smoothing: SmoothingOptions) -> FileResult | None:
        """Records one chunk's answer; the file's result once it is settled, else None."""
        if self.settled:
            return None
        if answer.status == "interrupted":
            self.interrupted = True
            return None
        if answer.status == "failed":
            self.settled = True
            return FileResult(self.path, "failed", processing_seconds=self.processing_seconds() + answer.processing_seconds,
                              error=answer.error, node=answer.node)
        self.answers[answer.index] = answer
        if self.interrupted or len(self.answers) < len(self.chunks):
            return None
        self.settled = True
        try:
            return self._merged(smoothing)
        except Exception as exc:  # noqa: BLE001 - an unwritable folder fails this file alone
            from ..runner import describe

            return FileResult(self.path, "failed", error=f"merging its {len(self.chunks)} chunks: {describe(exc)}"[:300])

    def processing_seconds(self) -> float:
        return sum(a.processing_seconds for a in self.answers.values())

    def _merged(self, smoothing: SmoothingOptions) -> FileResult:
        """The chunks merged, the file's events.jsonl and summary.json written (atomically)."""
        ordered = [self.answers[i] for i in range(len(self.chunks))]
        people = [m.person for m in merge_chunks([a.result for a in ordered if a.result is not None], smoothing)]
        summary = file_summary(ordered, people, self.chunks, self.fps)
        events = [p.to_event() for p in people]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.output_dir / layout.EVENTS, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
        write_json_atomic(self.output_dir / layout.SUMMARY, {**summary.to_dict(), "chunks": len(self.chunks)})
        nodes = ",".join(sorted({a.node for a in ordered if a.node}))
        return FileResult(self.path, "done", summary.frames, summary.duration, summary.processing_seconds, tuple(events), node=nodes or None)


def file_summary(answers: list[ChunkJobResult], people: list[TrackSummary], chunks: tuple[Chunk, ...], fps: float) -> RunSummary:
    """The file's summary from its chunks' (in order): frames counted once (the shared
    frames of each boundary were read by both neighbours), processing time summed; the
    faces inferred are summed too, so those of the shared frames count twice."""
    runs = [a.run for a in answers if a.run is not None]
    frames = sum(r.frames for r in runs) - sum(c.overlap for c in chunks[1:])
    seconds = round(sum(r.processing_seconds for r in runs), 3)
    return replace(
        runs[0], frames=frames, duration=round(frames / fps, 3), processing_seconds=seconds,
        processing_fps=round(frames / seconds, 2) if seconds > 0 else None, tracks=len(people),
        faces_inferred=sum(r.faces_inferred for r in runs), interrupted=False, people=list(people),
    )
