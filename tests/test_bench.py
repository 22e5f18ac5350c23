"""The benchmark CLI on real clips: the report's keys and sane values, never timing targets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tooling.bench import tracking_quality
from realtime.paths import ROOT
from tests.conftest import WALKING, WEBCAM

QUICK_THROUGHPUT = ["--batches", "1,4", "--throughput-seconds", "0.05"]
FAST = ["--max-frames", "8", *QUICK_THROUGHPUT]


def run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tooling.bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.fixture(scope="module")
def walking_report(tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = run_bench("--source", str(WALKING), "--model", str(model_path), "--device", "cpu", "--json", str(out), *FAST)
    return proc, out


def test_bench_runs_and_prints_the_tables(walking_report):
    proc, _ = walking_report
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for title in ("decode only", "pipeline / naive", "per-frame latency", "model throughput"):
        assert title in proc.stdout


def test_bench_json_has_the_top_level_numbers(walking_report):
    _, out = walking_report
    report = json.loads(out.read_text())
    for key in ("decode_fps", "pipeline_fps", "naive_fps", "peak_rss_mb"):
        assert positive(report[key]), (key, report[key])
    assert report["source"]["frames_measured"] == 8
    assert report["pipeline"]["frames"] == report["naive"]["frames"] == 8
    for key in ("pipeline_vs_naive", "pipeline_vs_decode", "batch32_vs_batch1"):
        assert key in report["ratios"]


def test_bench_json_has_stage_latencies(walking_report):
    _, out = walking_report
    report = json.loads(out.read_text())
    for stage in ("decode", "detect", "track", "crop", "infer", "render"):
        stats = report["stages"][stage]
        assert stats["n"] == 8
        assert 0 <= stats["p50_ms"] <= stats["p99_ms"]
    assert report["stages"]["detect"]["p50_ms"] > 0
    assert report["naive_stages"]["infer"]["p50_ms"] > 0  # the walkers are found in every frame


def test_bench_json_has_model_throughput_per_provider(walking_report):
    _, out = walking_report
    report = json.loads(out.read_text())
    cpu = [r for r in report["model_throughput"] if r.get("provider") == "CPUExecutionProvider" and "faces_per_s" in r]
    assert sorted(r["batch"] for r in cpu if r["model"] == report["settings"]["model"]) == [1, 4]
    assert all(positive(r["faces_per_s"]) and r["runs"] >= 3 for r in cpu)


def test_bench_json_describes_the_machine(walking_report):
    _, out = walking_report
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_model"] and positive(report["machine"]["logical_cores"])
    assert report["versions"]["onnxruntime"] and report["versions"]["mediapipe"]
    assert report["settings"]["providers"] == ["CPUExecutionProvider"]
    assert report["tracking"] is None  # the shared clip has no ground truth


def test_bench_reports_tracking_on_a_clip_with_ground_truth(tmp_path, model_path):
    video = tmp_path / "two.mp4"
    made = subprocess.run(
        [sys.executable, "-m", "tooling.scenes", "--out", str(video), "--people", "2", "--seconds", "1.2", "--size", "320x240", "--seed", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert made.returncode == 0, made.stderr
    out = tmp_path / "bench.json"
    # tracking is what this run checks: one batch size keeps the throughput phase short
    proc = run_bench("--source", str(video), "--model", str(model_path), "--device", "cpu", "--json", str(out), "--no-naive",
                     "--batches", "1", "--throughput-seconds", "0.05")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["naive"] is None and report["naive_fps"] is None
    tracking = report["tracking"]
    assert {"true_people", "tracks", "id_switches", "recall", "precision"} <= tracking.keys()
    assert tracking["true_people"] == 2 and tracking["tracks"] >= 1
    assert tracking["id_switches"] >= 0 and 0 < tracking["recall"] <= 1


BAD = [
    (["--source", "no/such/video.mp4"], "source not found"),
    (["--source", "pyproject.toml"], "not a readable video"),
    (["--source", str(WEBCAM), "--max-frames", "0"], "positive integer"),
    (["--source", str(WEBCAM), "--batches", "1,x"], "comma-separated"),
    (["--source", str(WEBCAM), "--device", "gpu9"], "invalid choice"),
    (["--source", str(WEBCAM), "--model", "no/such/model.onnx"], "model file not found"),
    (["--source", str(WEBCAM), "--json", "/no/such/dir/b.json"], "output folder does not exist"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line(args, message, model_path):
    if "--model" not in args:
        args = [*args, "--model", str(model_path)]
    proc = run_bench(*args, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_identity_switches_are_counted_against_the_truth():
    box_a, box_b = [0, 0, 10, 10], [50, 50, 60, 60]
    truth = {"frames": [
        [{"id": 0, "box": box_a}, {"id": 1, "box": box_b}],
        [{"id": 0, "box": box_a}, {"id": 1, "box": box_b}],
        [{"id": 0, "box": box_a}, {"id": 1, "box": box_b}],
    ]}
    shown = {
        0: [(1, tuple(box_a)), (2, tuple(box_b))],
        1: [(1, tuple(box_a))],  # person 1 missed
        2: [(3, tuple(box_a)), (2, tuple(box_b)), (9, (200.0, 200.0, 210.0, 210.0))],  # person 0 under a new id, one false face
    }
    quality = tracking_quality(truth, shown)
    assert quality["true_people"] == 2 and quality["tracks"] == 4
    assert quality["id_switches"] == 1
    assert quality["recall"] == pytest.approx(5 / 6, abs=1e-3)
    assert quality["precision"] == pytest.approx(5 / 6, abs=1e-3)
    assert quality["tracks_per_person"] == 1.5


def test_report_tool_turns_reports_into_a_table_and_a_plot(walking_report, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = walking_report
    png = tmp_path / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-m", "tooling.bench_report", str(out), "--before", str(out), "--plot", str(png)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| video |") and WALKING.name in lines[2]
    assert any(line.startswith("| model | provider | batch 1 | batch 4 |") for line in lines)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------- tooling.bench_streams, pure parts


def _run(mode, streams, repeat, frames, wall, processing, rss, cpu):
    from tooling.bench_streams import RunResult

    return RunResult(mode, streams, repeat, frames, wall, processing, tuple(rss), cpu)


def _streams_runs():
    return [
        _run("one_process", 1, 0, 500, 12.0, 10.0, [450.0], 10.0),
        _run("one_process", 1, 1, 500, 14.0, 12.5, [452.0], 11.0),
        _run("processes", 4, 0, 2000, 50.0, 40.0, [460.0, 455.0, 470.0, 465.0], 90.0),
        _run("processes", 4, 1, 2000, 45.0, 40.0, [460.0, 455.0, 470.0, 465.0], 88.0),
        _run("one_process", 4, 0, 2000, 25.0, 20.0, [540.0], 45.0),
        _run("one_process", 4, 1, 2000, 30.0, 25.0, [560.0], 47.0),
    ]


def test_streams_ratios_and_memory_per_extra_stream():
    from tooling.bench_streams import build_results

    results = build_results(_streams_runs(), (1, 4))
    one4 = results["configs"]["one_process/4"]
    assert one4["fps_processing"] == 90.0 and one4["fps_processing_best"] == 100.0  # median of 100 and 80
    assert one4["rss_total_mb"] == 550.0 and one4["cpu_util"] == pytest.approx((45 / 25 + 47 / 30) / 2, abs=0.01)
    procs4 = results["configs"]["processes/4"]
    assert procs4["fps_processing"] == 50.0 and procs4["rss_total_mb"] == 1850.0 and procs4["rss_per_process_mb"] == 470.0
    [ratios] = results["ratios"]
    assert ratios["streams"] == 4
    assert ratios["fps_processing_ratio"] == pytest.approx(90 / 50, abs=1e-3)
    assert ratios["fps_wall_ratio"] == pytest.approx(results["configs"]["one_process/4"]["fps_wall"] / procs4["fps_wall"], abs=1e-3)
    assert ratios["mb_per_extra_stream"] == pytest.approx((550 - 451) / 3, abs=0.1)
    assert ratios["mb_per_extra_process"] == pytest.approx((1850 - 451) / 3, abs=0.1)
    assert ratios["fps_ratio_met"] is True and ratios["memory_met"] is True
    assert len(results["runs"]) == 6 and results["runs"][2]["peak_rss_mb"] == [460.0, 455.0, 470.0, 465.0]


def test_streams_missed_targets_and_missing_configs():
    from tooling.bench_streams import build_results

    slow = [r for r in _streams_runs() if r.mode != "one_process" or r.streams == 1]
    slow.append(_run("one_process", 4, 0, 2000, 40.0, 36.0, [800.0], 70.0))
    [ratios] = build_results(slow, (1, 4))["ratios"]
    assert ratios["fps_ratio_met"] is False and ratios["memory_met"] is False
    [alone] = build_results([r for r in _streams_runs() if r.streams == 4], (1, 4))["ratios"]
    assert "mb_per_extra_stream" not in alone and alone["memory_met"] is None


def test_processing_window_spans_staggered_processes():
    from tooling.bench_streams import processing_window, summary_frames_and_seconds

    # exits at 10 and 12 s after 8 and 6 s of processing: processing ran from 2 s to 12 s
    assert processing_window([(10.0, 8.0), (12.0, 6.0)]) == 10.0
    assert summary_frames_and_seconds({"frames": 35, "processing_seconds": 1.5}) == (35, 1.5)
    assert summary_frames_and_seconds({"streams": [], "frames": 76, "wall_seconds": 2.1, "processing_seconds": 9}) == (76, 2.1)


def test_streams_schedule_interleaves_and_reverses():
    from tooling.bench_streams import schedule

    order = schedule((1, 4), 2)
    assert order == [(0, "one_process", 1), (0, "processes", 4), (0, "one_process", 4),
                     (1, "one_process", 4), (1, "processes", 4), (1, "one_process", 1)]


def test_streams_tables_show_every_configuration():
    from rich.console import Console

    from tooling.bench_streams import build_results, configs_table, ratios_table

    results = build_results(_streams_runs(), (1, 4))
    console = Console(width=160, record=True)
    console.print(configs_table(results))
    console.print(ratios_table(results))
    text = console.export_text()
    assert "4 procs" in text and text.count("1 process") == 2
    assert "1.80x" in text and "met" in text


@pytest.mark.parametrize("args", [["--streams", "0"], ["--counts", "1,x"], ["--streams", "2", "--counts", "1,4"],
                                  ["--repeats", "0"], ["--json", "/no/such/dir/s.json"]])
def test_streams_bad_arguments_stop_before_any_run(args, capsys):
    from tooling.bench_streams import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err


def test_bench_models_compares_models_side_by_side(tmp_path):
    out = tmp_path / "models.json"
    done = subprocess.run(
        [sys.executable, "-m", "tooling.bench_models", "models/agegender.onnx", "models/agegender-cpu.onnx",
         "--faces", "8", "--rounds", "2", "--threads", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = report["models"]
    assert list(rows) == ["models/agegender.onnx", "models/agegender-cpu.onnx"]
    assert rows["models/agegender.onnx"]["ratio_to_first"] == 1.0
    assert all(len(r["rounds"]) == 2 and r["faces_per_s"] > 0 for r in rows.values())
    missing = subprocess.run([sys.executable, "-m", "tooling.bench_models", "no/such.onnx"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no such model file: no/such.onnx"
