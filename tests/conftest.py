"""Shared fixtures: the real data in ../shared and the shipped models."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.paths import DEFAULT_MODEL, ROOT, SHARED_DATA
from tooling.scenes import read_frames  # noqa: F401  (the tests' frame reader)

FACES = SHARED_DATA / "faces"
VIDEOS = SHARED_DATA / "videos"
WEBCAM = VIDEOS / "webcam_one_person.mp4"
WALKING = VIDEOS / "three_people_walking.gif"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not (FACES / "labels.csv").is_file() or not WEBCAM.is_file():
        raise pytest.UsageError(f"the shared data set is missing: expected it at {SHARED_DATA}")


@pytest.fixture(scope="session")
def labels() -> list[dict[str, str]]:
    with open(FACES / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_face(row: dict[str, str]) -> np.ndarray:
    image = cv2.imread(str(FACES / row["file"]))
    assert image is not None, row["file"]
    return image


@pytest.fixture(scope="session")
def model_path() -> Path:
    # the shipped default unless a run is pointed at another exported model
    return Path(os.environ.get("AGEGENDER_TEST_MODEL", DEFAULT_MODEL))


@pytest.fixture(scope="session")
def model(model_path: Path):
    from realtime.model import AgeGenderModel

    return AgeGenderModel.create(model_path, "cpu")


@pytest.fixture(scope="session")
def detector():
    from realtime.detection import DetectorOptions, FaceDetector

    det = FaceDetector.create_from_options(DetectorOptions())
    yield det
    det.close()




def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "run_camera.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )
