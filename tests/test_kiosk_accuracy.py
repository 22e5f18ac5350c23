"""tooling.kiosk_accuracy: the README's kiosk figures, measured on generated scenes."""

from __future__ import annotations

import json
import subprocess
import sys

from realtime.paths import ROOT
from tooling.kiosk_accuracy import total
from tooling.kiosk_truth import VisitScore


def visit_score(**overrides) -> VisitScore:
    values = dict(truth_visitors=4, visits=4, missed=0, split=0, spurious=0, dwell_errors=[0.0, 0.05, 1.0, 7.0],
                  gender_correct=3, gender_known=4, bracket_exact=2, bracket_within_one=4, bracket_known=4)
    return VisitScore(**{**values, **overrides})


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tooling.kiosk_accuracy", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_totals_pool_the_scenes():
    a = visit_score()
    b = visit_score(visits=5, split=1, spurious=1, dwell_errors=[0.0, 2.5, 0.1], gender_correct=2, gender_known=3,
                    bracket_exact=3, bracket_within_one=3, bracket_known=3)
    t = total([a, b], fps=15.0)
    assert (t.scenes, t.truth_visitors, t.visits, t.split, t.spurious) == (2, 8, 9, 1, 1)
    # within a frame at 15 fps: 0.0, 0.05, 0.0 (0.1 is more than 1/15 s)
    assert (t.dwell_within_frame, t.dwell_within_3s, t.dwell_scored, t.dwell_worst_s) == (3, 6, 7, 7.0)
    assert t.gender_accuracy == 5 / 7
    assert t.gender_shown == 7 / 8  # 8 visits matched to a visitor (one spurious of 9), 7 show a gender
    assert (t.bracket_exact_share, t.bracket_within_one_share) == (5 / 7, 1.0)


def test_one_real_scene_is_scored_and_its_record_never_overwritten(tmp_path, model_path):
    out = tmp_path / "kiosk.json"
    proc = run_tool("--scenes", "1", "--people", "2", "--seconds", "8", "--jobs", "1", "--model", str(model_path),
                    "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    t = record["totals"]
    assert t["truth_visitors"] == 2 and t["spurious"] == 0 and t["missed"] + t["split"] <= 1, record
    assert t["gender_known"] >= 1 and t["bracket_known"] >= 1, record
    assert "visitors: 2 in 1 scenes" in proc.stdout
    before = out.read_bytes()
    again = run_tool("--scenes", "1", "--model", str(model_path), "--json", str(out))
    assert again.returncode == 2 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    assert out.read_bytes() == before


def test_a_missing_model_is_one_line(tmp_path):
    proc = run_tool("--model", str(tmp_path / "none.onnx"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"model not found: {tmp_path / 'none.onnx'}"
