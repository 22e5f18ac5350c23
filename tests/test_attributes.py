"""Per-face attributes as smoothers: the registry, a new attribute added without touching the
analyzer, and the analyzer's ownership of the estimates (one per track, only while it lasts)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from realtime.analyzer import Analyzer, AnalyzerOptions, prediction_rows
from realtime.crops import face_crop
from realtime.model import AgeGenderModel, Predictions
from realtime.paths import ROOT
from realtime.smoothing import (
    ATTRIBUTES,
    Estimates,
    FaceEstimates,
    Smoother,
    SmoothingOptions,
    view_weight,
)
from realtime.sources import open_source
from tests.conftest import WALKING, WEBCAM, read_frames


class AgeSpreadSmoother:
    """A second kind of attribute: how unsure the model itself is of the age (softmax models' `age_std`).

    Written here as a newcomer would add it to smoothing.py: the quality-weighted mean of
    the model's own spread over the track, shown once the age itself could be.
    """

    def __init__(self, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.options = options
        self.total = self.weight = 0.0
        self.inferences = 0

    def update(self, prediction: dict[str, float], weight: float) -> None:
        w = view_weight(weight)
        self.total += w * prediction["age_std"]
        self.weight += w
        self.inferences += 1

    @property
    def settled(self) -> bool:
        return self.inferences >= self.options.min_inferences

    def shown(self) -> dict[str, Any]:
        return {"model_age_spread": round(self.total / self.weight, 1) if self.settled else None}

    def final(self) -> dict[str, Any]:
        return self.shown()


@pytest.fixture(scope="module")
def softmax_model() -> AgeGenderModel:
    # the age-distribution model: its age_std is a real spread, not the regressors' zero
    model = AgeGenderModel.create(ROOT / "models" / "faceres.onnx", "cpu")
    assert model.metadata.age_kind == "softmax"
    return model


@pytest.fixture(scope="module")
def webcam_predictions(detector, softmax_model) -> list[tuple[dict[str, float], float]]:
    """The one person of the webcam clip, every 10th frame: the model's outputs and a weight."""
    rows = []
    for image in read_frames(WEBCAM, 200)[::10]:
        found = detector.detect(image)
        if len(found) == 0:
            continue
        keypoints = found.data["keypoints"][0] if "keypoints" in found.data else None
        crop = face_crop(image, found.xyxy[0], keypoints, softmax_model.input_size, softmax_model.metadata.crop_margin)
        rows.append((prediction_rows(softmax_model.predict(crop[None]))[0], float(found.confidence[0])))
    assert len(rows) >= 15
    return rows


def test_every_registered_smoother_fills_exactly_the_fields_of_estimates():
    names = [f.name for f in fields(Estimates)]
    estimates = FaceEstimates()
    assert all(isinstance(s, Smoother) for s in [*estimates.smoothers, AgeSpreadSmoother()])
    assert list(estimates.shown_fields()) == names and list(estimates.final_fields()) == names
    estimates.update({"age": 30.0, "p_male": 0.2}, 1.0)
    assert estimates.shown() == Estimates()  # one inference shows nothing yet


def test_prediction_rows_name_every_model_output(softmax_model, webcam_predictions):
    row, _ = webcam_predictions[0]
    assert set(row) == {f.name for f in fields(Predictions)}
    assert all(isinstance(v, float) for v in row.values())
    assert prediction_rows(softmax_model.predict([])) == []


def test_a_new_attribute_is_a_smoother_in_the_registry(webcam_predictions):
    extended = FaceEstimates(attributes=(*ATTRIBUTES, AgeSpreadSmoother))
    plain = FaceEstimates()
    for prediction, weight in webcam_predictions:
        extended.update(prediction, weight)
        plain.update(prediction, weight)
    shown = extended.shown_fields()
    spreads = [p["age_std"] for p, _ in webcam_predictions]
    assert min(spreads) - 0.05 <= shown["model_age_spread"] <= max(spreads) + 0.05
    assert shown["model_age_spread"] > 1.0  # a softmax over ages is never a point
    # the other attributes are untouched by the newcomer
    assert {k: v for k, v in shown.items() if k != "model_age_spread"} == plain.shown_fields()
    assert extended.settled and plain.settled
    assert plain.final().gender == "male"  # the webcam's person, as the pipeline test has him


def test_the_analyzer_holds_estimates_for_exactly_the_tracks_in_view(model_path):
    with open_source(str(WALKING)) as source, Analyzer.create_from_options(
        AnalyzerOptions(model_path=model_path, device="cpu", fps=source.info.fps)
    ) as analyzer:
        for frame in source:
            result = analyzer.process(frame.image, frame.index, frame.time)
            # created when a track appears, dropped when it ends (also when too short for an event)
            assert set(analyzer._estimating) == set(analyzer.book.active)
            for face in result.faces:
                assert face.estimates == analyzer._estimating[face.track_id].estimates.shown()
        people = analyzer.finish()
        assert analyzer._estimating == {}
    assert len(people) == 3
    assert sum(p.frames_inferred for p in people) == analyzer.faces_inferred
    assert all(p.to_event()["age"] == round(p.estimates.age, 1) for p in people)
