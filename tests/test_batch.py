"""`python -m realtime.batch` on a real Ray: a two-node `ray.cluster_utils.Cluster` on this
machine (1 CPU per node), started once for the module, and generated videos with known
people (tooling.scenes) plus a corrupt file.

Every test runs on the two nodes, so none can pass by assuming one; the command-line
runs connect to the same cluster with --address, which also saves a Ray start each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the cluster extra (Ray) is not installed")

from realtime.analyzer import Analyzer, AnalyzerOptions
from realtime.batch import layout
from realtime.batch.manifest import Manifest
from realtime.batch.runner import BatchOptions, run_batch
from realtime.batch.worker import WorkerOptions
from realtime.paths import DEFAULT_MODEL, ROOT
from realtime.runner import RunOptions, run
from realtime.sources import open_source

MB = 1024 * 1024
# three short scenes, 320x240 at 25 fps: (seed, people)
SCENES = ((3, 2), (5, 1), (8, 3))
SECONDS = 4.0
LONG_SEED = 3  # its 12 s scene has people in view across both chunk boundaries


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * MB, "include_dashboard": False})
    c.add_node(num_cpus=1, object_store_memory=80 * MB)
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A folder: three videos (one in a subfolder, with a name another one also has) and a corrupt file."""
    from tooling.scenes import make_scenario, render

    root = tmp_path_factory.mktemp("archive")
    names = [root / "a" / "clip.mp4", root / "b" / "clip.mp4", root / "c.avi"]
    for (seed, people), path in zip(SCENES, names):
        scenario = make_scenario(seed, n_people=people, width=320, height=240, fps=25.0, seconds=SECONDS, face_px=(50, 75))
        render(scenario, path)
    (root / "broken.mp4").write_bytes(os.urandom(20_000))
    return root


def reference_people(path: Path) -> list[dict]:
    """What a separate single-file run (run_camera.py's pipeline, in process) finds."""
    with open_source(str(path)) as source, Analyzer.create_from_options(AnalyzerOptions(fps=source.info.fps, device="cpu")) as analyzer:
        summary = run(source, analyzer, RunOptions(progress=False))
    return [p.to_event() for p in summary.people]


def batch_cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "realtime.batch", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def entries(out: Path) -> dict[str, object]:
    return Manifest.load(out / layout.MANIFEST).entries


def test_people_match_separate_runs_and_a_corrupt_file_fails_alone(cluster, archive, tmp_path):
    import pyarrow.parquet as pq
    from rich.console import Console

    from realtime.batch.inputs import collect_inputs

    out = tmp_path / "out"
    options = BatchOptions(out=out, worker=WorkerOptions(AnalyzerOptions(model_path=DEFAULT_MODEL, device="cpu")), workers=2, progress=False)
    report = run_batch(collect_inputs([str(archive)]), options, Console(stderr=True, quiet=True))

    assert (report.done, report.failed, report.skipped, report.interrupted) == (3, 1, 0, False)
    found = entries(out)
    broken = found[str(archive / "broken.mp4")]
    assert broken.status == "failed" and broken.error == f"not a readable video: {archive / 'broken.mp4'}"
    assert len({e.node for e in found.values()}) == 2, "the two workers ran on the two nodes"
    assert len({e.output for e in found.values()}) == 4, "a/clip.mp4 and b/clip.mp4 get separate folders"
    rows = pq.read_table(out / layout.PEOPLE_PARQUET).to_pylist()
    for (seed, people), path in zip(SCENES, [archive / "a" / "clip.mp4", archive / "b" / "clip.mp4", archive / "c.avi"]):
        entry = found[str(path)]
        assert entry.status == "done" and entry.frames == int(SECONDS * 25) and entry.attempts == 1
        expected = reference_people(path)
        events = [json.loads(line) for line in (out / entry.output / layout.EVENTS).read_text().splitlines()]
        summary = json.loads((out / entry.output / layout.SUMMARY).read_text())
        assert len(expected) == people, f"the scene's {people} people, found by the reference run"
        assert entry.people == summary["tracks"] == len(events) == len(expected)
        key = lambda e: (e["track_id"], e["first_frame"], e["last_frame"], e["frames_seen"], e["frames_inferred"], e["gender"])
        assert sorted(map(key, events)) == sorted(map(key, expected))
        for got, want in zip(sorted(events, key=key), sorted(expected, key=key)):
            assert got["age"] == pytest.approx(want["age"], abs=0.5)  # 1 onnxruntime thread against all
        mine = [r for r in rows if r["file"] == str(path)]
        assert sorted((r["track_id"], r["start"], r["end"], r["frames"]) for r in mine) == sorted(
            (e["track_id"], e["first_time"], e["last_time"], e["frames_seen"]) for e in events)
    csv_lines = (out / layout.PEOPLE_CSV).read_text().splitlines()
    assert csv_lines[0] == "file,track_id,start,end,age,age_std,gender,gender_confidence,frames"
    assert len(csv_lines) - 1 == len(rows) == report.people == sum(p for _, p in SCENES)


def wait_for_done(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sum(e.status == "done" for e in entries(out).values()) >= count:
                return
        except Exception:  # noqa: BLE001 - not written yet
            pass
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no {count} files done in {timeout} s")


def test_killed_then_stopped_then_resumed_processes_nothing_twice(cluster, archive, tmp_path):
    import shutil

    # six videos (copies of the three) and the corrupt file: files remain after each stop
    videos = tmp_path / "videos"
    for copy in ("1", "2"):
        shutil.copytree(archive, videos / copy)
    out = tmp_path / "out"
    args = (str(videos), "--out", str(out), "--address", cluster.address, "--workers", "1", "--quiet", "--device", "cpu")

    first = batch_cli(*args)
    wait_for_done(out, 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    done_first = {p: e.finished_at for p, e in entries(out).items() if e.status == "done"}

    second = batch_cli(*args)
    wait_for_done(out, len(done_first) + 1, second)
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130, err
    assert "interrupted" in err
    after_stop = entries(out)
    assert all(after_stop[p].finished_at == t for p, t in done_first.items())

    third = batch_cli(*args)
    _, err = third.communicate(timeout=180)
    assert third.returncode == 4, err  # every video done, the corrupt file failed
    final = entries(out)
    done = {p: e for p, e in final.items() if e.status == "done"}
    broken = [videos / copy / "broken.mp4" for copy in ("1", "2")]
    assert len(done) == 6 and all(final[str(b)].status == "failed" for b in broken)
    assert all(e.attempts == 1 for e in done.values()), "a file done was processed again"
    assert all(done[p].finished_at == t for p, t in done_first.items())
    assert f"failed: {broken[0]}: not a readable video" in err


@pytest.mark.parametrize("case", ["no inputs", "missing input", "out is a file", "out holds other files", "out holds the input",
                                  "chunk shorter than twice the overlap"])
def test_bad_usage_is_one_line_and_exit_2(archive, tmp_path, case):
    video = str(archive / "c.avi")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("the user's")
    args = {
        "no inputs": ["--out", str(tmp_path / "o")],
        "missing input": [str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")],
        "out is a file": [video, "--out", video],
        "out holds other files": [video, "--out", str(foreign)],
        "out holds the input": [str(archive / "a" / "clip.mp4"), "--out", str(archive / "a")],
        "chunk shorter than twice the overlap": [video, "--out", str(tmp_path / "o"), "--chunk-minutes", "0.1"],
    }[case]
    process = batch_cli(*args)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert (foreign / "notes.txt").read_text() == "the user's" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_long_file_in_chunks_gives_the_people_of_the_whole_file(cluster, tmp_path):
    """A 12 s file in 4 s chunks (2 s shared around each boundary), the chunks spread over
    both nodes and merged by the driver: the people of the same file processed whole. A
    truncated copy (its header promises frames it lacks) fails alone, naming its chunk."""
    from rich.console import Console

    from tooling.scenes import make_scenario, render

    video, broken = tmp_path / "long.avi", tmp_path / "truncated.avi"
    truth = render(make_scenario(LONG_SEED, n_people=3, width=320, height=240, fps=25.0, seconds=12.0, face_px=(50, 75)), video)
    broken.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # about 145 of 300 frames
    for boundary in (100, 200):
        assert any(p["first_frame"] < boundary - 25 and p["last_frame"] > boundary + 25 for p in truth["people"])

    def batch(name: str, inputs: list[Path], chunk_seconds: float) -> tuple[object, list[dict], dict]:
        out = tmp_path / name
        worker = WorkerOptions(AnalyzerOptions(model_path=DEFAULT_MODEL, device="cpu"))
        options = BatchOptions(out=out, worker=worker, workers=2, progress=False, chunk_seconds=chunk_seconds, overlap_seconds=2.0)
        report = run_batch(inputs, options, Console(stderr=True, quiet=True))
        assert (report.done, report.failed) == (1, len(inputs) - 1)
        entry = entries(out)[str(video)]
        events = [json.loads(line) for line in (out / entry.output / layout.EVENTS).read_text().splitlines()]
        return entry, events, json.loads((out / entry.output / layout.SUMMARY).read_text())

    whole_entry, whole, _ = batch("whole", [video], 600.0)
    entry, merged, summary = batch("chunked", [video, broken], 0.08 * 60)
    assert whole_entry.chunks == 1 and entry.chunks == summary["chunks"] == 3
    assert len(entry.node.split(",")) == 2, "the chunks ran as separate jobs, on both nodes"
    assert entry.status == "done" and entry.frames == summary["frames"] == 300 and summary["duration"] == 12.0
    assert len(merged) == len(whole) == entry.people == summary["tracks"] == len(summary["people"]) >= len(truth["people"])
    assert [e["track_id"] for e in merged] == list(range(1, len(merged) + 1))
    for got, want in zip(sorted(merged, key=lambda e: e["first_time"]), sorted(whole, key=lambda e: e["first_time"])):
        assert got["first_time"] == pytest.approx(want["first_time"], abs=0.2)
        assert got["last_time"] == pytest.approx(want["last_time"], abs=0.2)
        assert got["gender"] == want["gender"]
    csv_rows = (tmp_path / "chunked" / layout.PEOPLE_CSV).read_text().splitlines()[1:]
    assert len(csv_rows) == len(merged)
    failed = entries(tmp_path / "chunked")[str(broken)]
    assert failed.status == "failed" and failed.chunks == 3 and failed.error.startswith("chunk 3 of 3 (frames "), failed.error
    assert not (tmp_path / "chunked" / failed.output / layout.EVENTS).exists()
