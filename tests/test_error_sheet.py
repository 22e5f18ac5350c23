"""tooling.error_sheet: the worst mistakes of a predictions CSV drawn on real faces, in order."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest

from tests.conftest import FACES
from tooling.error_sheet import TILE, main

COLUMNS = ["file", "source", "gender", "age", "race", "p_male", "age_pred", "age_std", "face_found"]


def write_predictions(path: Path, labels: list[dict[str, str]], predictions: list[tuple[float, float]]) -> list[dict[str, str]]:
    """A training.evaluate-style CSV: real faces with the given (P(male), age) predictions."""
    rows = [r for r in labels if r["gender"] in ("male", "female") and r["age"]][: len(predictions)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r, (p, age) in zip(rows, predictions):
            writer.writerow([str(FACES / r["file"]), r["source"], r["gender"], r["age"], "", p, age, 0, 1])
    return rows


def wrong(row: dict[str, str], confidence: float) -> float:
    return 1 - confidence if row["gender"] == "male" else confidence


def test_the_surest_wrong_genders_come_first_and_the_unsure_are_left_out(tmp_path, labels, capsys):
    rows = [r for r in labels if r["gender"] in ("male", "female") and r["age"]][:4]
    preds = [(wrong(rows[0], 0.95), 30.0), (wrong(rows[1], 0.99), 30.0), (wrong(rows[2], 0.6), 30.0),
             (0.99 if rows[3]["gender"] == "male" else 0.01, 30.0)]
    write_predictions(tmp_path / "val.csv", labels, preds)
    assert main([str(tmp_path / "val.csv"), "--out", str(tmp_path / "sheet.png"), "--columns", "3"]) == 0
    listed = [line.split(",")[1] for line in capsys.readouterr().out.splitlines()[2:]]
    assert listed == [str(FACES / rows[1]["file"]), str(FACES / rows[0]["file"])]
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert sheet.shape == (TILE, 3 * TILE, 3) and sheet[:, 2 * TILE :].max() == 0  # two faces, one blank


def test_age_mistakes_are_the_largest_errors(tmp_path, labels, capsys):
    rows = write_predictions(tmp_path / "val.csv", labels, [(0.5, 0.0)] * 3)
    offs = [abs(float(r["age"])) for r in rows]  # predicting age 0: off by the label
    assert main([str(tmp_path / "val.csv"), "--out", str(tmp_path / "age.png"), "--kind", "age", "--min-years", "0"]) == 0
    listed = [line.split(",")[1] for line in capsys.readouterr().out.splitlines()[2:]]
    expected = [str(FACES / rows[i]["file"]) for i in sorted(range(3), key=lambda i: -offs[i])]
    assert listed == expected


@pytest.mark.parametrize("case, message", [
    ("missing", "predictions file not found"),
    ("not_predictions", "not a predictions file"),
    ("exists", "never overwritten"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, labels, capsys, case, message):
    csv_path, out = tmp_path / "val.csv", tmp_path / "sheet.png"
    if case == "not_predictions":
        csv_path.write_text("file,gender\nx.webp,male\n")
    elif case == "exists":
        write_predictions(csv_path, labels, [(0.5, 30.0)])
        out.write_bytes(b"the user's own file")
    with pytest.raises(SystemExit) as exc:
        main([str(csv_path), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    if case == "exists":
        assert out.read_bytes() == b"the user's own file"
