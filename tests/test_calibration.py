"""The gender calibration: the map's math, its fit, its place in the model's metadata, and
the "uncertain" gender it leads to in the overlay, the people table and the CLI."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import onnx
import pytest

from export.faces import load_image, load_labels, sample_faces
from export.metadata import read_metadata, write_metadata
from realtime.analyzer import FaceResult
from realtime.calibration import GenderCalibration, calibrate_p_male, calibrated_logit, hat_basis, logit
from realtime.metadata import ModelMetadata
from realtime.model import AgeGenderModel
from realtime.overlay import face_label
from realtime.paths import DEFAULT_MODEL
from realtime.scheduling import FaceQuality
from realtime.smoothing import Estimates
from training.calibrate import fit_map
from training.metrics import abstention

SOFTER_CHILDREN = GenderCalibration((5.0, 30.0), (0.5, 1.0), (0.0, 0.2))


def test_hat_basis_interpolates_and_holds_the_ends():
    basis = hat_basis(np.array([0.0, 5.0, 17.5, 30.0, 80.0]), (5.0, 30.0))
    np.testing.assert_allclose(basis.sum(axis=1), 1.0)
    np.testing.assert_allclose(basis[:, 0], [1.0, 1.0, 0.5, 0.0, 0.0])


def test_the_map_softens_children_and_keeps_adults():
    p = np.array([0.9, 0.9, 0.9], np.float32)
    out = calibrate_p_male(p, np.array([3.0, 17.5, 40.0]), SOFTER_CHILDREN)
    # a toddler's 0.9 is taken at half its log-odds; an adult's gets the adult offset
    assert out[0] == pytest.approx(1 / (1 + np.exp(-0.5 * np.log(9))), abs=1e-6)
    assert out[2] == pytest.approx(1 / (1 + np.exp(-(np.log(9) + 0.2))), abs=1e-6)
    assert out[0] < out[1] < out[2]
    # no calibration: the probabilities pass unchanged
    np.testing.assert_array_equal(calibrate_p_male(p, np.zeros(3), None), p)


def test_the_map_is_increasing_in_the_raw_probability():
    p = np.linspace(0.001, 0.999, 200)
    for age in (1.0, 10.0, 60.0):
        z = calibrated_logit(p, np.full_like(p, age), SOFTER_CHILDREN)
        assert np.all(np.diff(z) > 0)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"age_knots": [5, 30], "slope": [1.0], "offset": [0, 0]}, "as many slopes"),
        ({"age_knots": [30, 5], "slope": [1, 1], "offset": [0, 0]}, "not increasing"),
        ({"age_knots": [5, 30], "slope": [1, -0.5], "offset": [0, 0]}, "not positive"),
        ({"age_knots": [5, 30], "slope": [1, float("nan")], "offset": [0, 0]}, "finite"),
        ({"slope": [1]}, "malformed"),
    ],
)
def test_a_broken_calibration_in_a_model_file_is_refused(values, message):
    props = read_metadata(DEFAULT_MODEL).to_props()
    props["gender_calibration"] = json.dumps(values)
    with pytest.raises(ValueError, match=message):
        ModelMetadata.from_props(props)


def test_fit_recovers_a_known_map():
    # labels drawn from a known age-dependent map of the raw logit: the fit finds it
    rng = np.random.default_rng(0)
    n = 40_000
    age = rng.uniform(0, 60, n)
    raw = rng.normal(0, 2.5, n)
    truth = GenderCalibration((5.0, 30.0, 55.0), (0.4, 1.0, 0.8), (0.3, 0.0, -0.2))
    p_true = 1 / (1 + np.exp(-calibrated_logit(1 / (1 + np.exp(-raw)), age, truth)))
    male = rng.random(n) < p_true
    fitted = fit_map(1 / (1 + np.exp(-raw)), age, male, truth.age_knots, "synthetic", offsets=True)
    np.testing.assert_allclose(fitted.slope, truth.slope, atol=0.08)
    np.testing.assert_allclose(fitted.offset, truth.offset, atol=0.12)
    # slopes alone: the labels of the raw probabilities are kept, the slopes still found
    slopes_only = fit_map(1 / (1 + np.exp(-raw)), age, male, truth.age_knots, "synthetic")
    assert slopes_only.offset == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(slopes_only.slope, truth.slope, atol=0.12)


def test_the_model_reports_calibrated_probabilities(tmp_path):
    """A model file that carries a calibration gives calibrated P(male) to everything
    downstream: the same file without it gives the raw values they are computed from."""
    proto = onnx.load(str(DEFAULT_MODEL))
    meta = dataclasses.replace(read_metadata(proto), gender_calibration=SOFTER_CHILDREN.to_dict())
    calibrated_path = tmp_path / "calibrated.onnx"
    onnx.save(write_metadata(proto, meta), str(calibrated_path))
    raw_proto = onnx.load(str(DEFAULT_MODEL))
    raw_path = tmp_path / "raw.onnx"
    onnx.save(write_metadata(raw_proto, dataclasses.replace(meta, gender_calibration={})), str(raw_path))
    faces = [cv2.resize(load_image(f), (224, 224)) for f in sample_faces(load_labels(), 4, seed=2)]
    crops = np.stack(faces)
    raw = AgeGenderModel.create(raw_path, "cpu").predict(crops)
    calibrated = AgeGenderModel.create(calibrated_path, "cpu").predict(crops)
    np.testing.assert_array_equal(calibrated.age, raw.age)
    np.testing.assert_allclose(calibrated.p_male, calibrate_p_male(raw.p_male, raw.age, SOFTER_CHILDREN), atol=1e-6)
    assert not np.allclose(calibrated.p_male, raw.p_male)


def test_abstention_counts_shown_and_confidently_wrong():
    male = np.array([True, True, False, False])
    p = np.array([0.95, 0.6, 0.9, 0.1])  # right, uncertain, confidently wrong, right
    a = abstention(male, p, 0.8)
    assert a["shown_share"] == 0.75 and a["confident_wrong_share"] == 0.25
    assert a["accuracy_shown"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        abstention(male, p, 0.4)


def face(estimates: Estimates) -> FaceResult:
    quality = FaceQuality(size_px=80.0, sharpness=1.0, frontal=1.0, score=1.0, usable=True)
    return FaceResult(track_id=3, box=(0, 0, 10, 10), confidence=0.9, estimates=estimates, inferred=True, quality=quality)


def test_overlay_says_uncertain_once_the_age_is_known():
    assert face_label(face(Estimates())) == "#3 … | …"
    assert face_label(face(Estimates(age=4, age_std=2.0))) == "#3 gender? | 4±2"
    assert face_label(face(Estimates(age=30, age_std=3.0, gender="male", gender_confidence=0.91))) == "#3 male 91% | 30±3"


def test_logit_is_finite_at_the_ends():
    assert np.all(np.isfinite(logit(np.array([0.0, 1.0]))))
