"""The smoothing math, alone: robust age, averaged calibrated gender evidence, no jitter, no flip-flop."""

import numpy as np
import pytest

from realtime.smoothing import (
    AgeSmoother,
    FaceEstimates,
    GenderSmoother,
    SmoothingOptions,
    age_estimate,
    gender_log_odds,
    robust_spread,
    weighted_median,
)


def feed(samples, state=None, options=SmoothingOptions()):
    """The age and gender estimates after each (age, P(male), weight) inference in turn."""
    state = state or FaceEstimates(options)
    for age, p_male, weight in samples:
        state.update({"age": age, "p_male": p_male}, weight)
    return state


def display(state: FaceEstimates):
    return state.shown()


def smoother(state: FaceEstimates, kind):
    return next(s for s in state.smoothers if isinstance(s, kind))


def test_weighted_median_follows_weights():
    values = np.array([10.0, 20.0, 30.0])
    assert weighted_median(values, np.ones(3)) == 20.0
    assert weighted_median(values, np.array([1.0, 1.0, 5.0])) == 30.0


def test_robust_spread_ignores_a_few_wild_values():
    rng = np.random.default_rng(0)
    values = rng.normal(30, 3, 200)
    values[:10] = 95.0  # a few absurd estimates (a bad crop, a blink)
    center = weighted_median(values, np.ones_like(values))
    assert abs(center - 30) < 1.0
    assert 2.0 < robust_spread(values, np.ones_like(values), center) < 4.0
    assert np.std(values) > 10  # what a plain std would have said


def test_nothing_shown_before_enough_inferences():
    state = feed([(30, 0.99, 1.0)])
    shown = display(state)
    assert shown.age is None and shown.gender is None
    shown = display(feed([(30, 0.99, 1.0)], state))
    assert shown.age == 30 and shown.gender == "male" and shown.gender_confidence > 0.8


def test_uncertain_gender_is_not_shown():
    state = feed([(30, 0.55, 1.0), (31, 0.45, 1.0), (30, 0.6, 1.0), (29, 0.4, 1.0)])
    assert display(state).gender is None
    assert display(state).age is not None


def test_gender_does_not_flip_on_a_few_contrary_frames():
    state = feed([(30, 0.95, 1.0)] * 20)
    state = feed([(30, 0.05, 1.0)] * 3, state)
    assert display(state).gender == "male"


def test_gender_changes_on_sustained_contrary_evidence():
    state = feed([(30, 0.9, 1.0)] * 10)
    state = feed([(30, 0.02, 1.0)] * 30, state)
    assert display(state).gender == "female"


def log_odds(state: FaceEstimates) -> float:
    g = smoother(state, GenderSmoother).state
    return gender_log_odds(g.logits, g.weights)


def test_low_quality_views_count_less():
    # four poor views add up to less than one good one: their evidence is shrunk
    good = feed([(30, 0.9, 1.0)] * 4)
    poor = feed([(30, 0.9, 0.1)] * 4)
    assert log_odds(good) == pytest.approx(np.log(9))
    assert log_odds(poor) == pytest.approx(0.4 * np.log(9))
    # among enough views, a poor one moves the mean less than a good one
    mixed = feed([(30, 0.9, 1.0)] * 4 + [(30, 0.1, 0.1)])
    assert log_odds(mixed) == pytest.approx((4 - 0.1) * np.log(9) / 4.1)


def test_many_frames_of_a_doubtful_face_stay_doubtful():
    # a toddler the calibrated model calls 70% male, for a hundred frames: the mistakes
    # on one face repeat with it, so the evidence does not pile up into certainty
    state = feed([(3, 0.7, 1.0)] * 100)
    assert display(state).gender is None
    assert 1 / (1 + np.exp(-log_odds(state))) == pytest.approx(0.7)
    assert display(state).age == 3
    # the user's threshold decides what is shown
    lenient = feed([(3, 0.7, 1.0)] * 3, options=SmoothingOptions(gender_threshold=0.65))
    assert display(lenient).gender == "male" and display(lenient).gender_confidence == pytest.approx(0.7)


def test_shown_age_does_not_jitter():
    rng = np.random.default_rng(1)
    state = FaceEstimates()
    shown = []
    for age in rng.normal(27, 1.5, 300):
        state.update({"age": float(age), "p_male": 0.9}, 1.0)
        shown.append(display(state).age)
    shown = [a for a in shown if a is not None]
    changes = sum(1 for a, b in zip(shown, shown[1:]) if a != b)
    assert changes <= 5, changes
    assert abs(shown[-1] - 27) <= 2


def test_shown_age_follows_a_real_change():
    state = feed([(25, 0.9, 1.0)] * 10)
    assert display(state).age == 25
    state = feed([(40, 0.9, 1.0)] * 40, state)  # the history window rolls over
    assert display(state).age == 40


def test_history_is_bounded():
    options = SmoothingOptions(history=16)
    state = feed([(30, 0.9, 1.0)] * 100, options=options)
    ages = smoother(state, AgeSmoother).state
    assert len(ages.ages) == 16 and ages.inferences == 100


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_extreme_probabilities_are_finite(p):
    state = feed([(30, p, 1.0)] * 5)
    assert np.isfinite(log_odds(state))
    assert age_estimate(smoother(state, AgeSmoother).state) == (30.0, 0.0)


def test_the_record_keeps_the_full_age_estimate_and_rounds_only_in_json():
    state = feed([(30.0, 0.9, 1.0), (30.6, 0.9, 1.0), (31.0, 0.9, 1.0)])
    final, shown = state.final(), state.shown()
    assert shown.age == 30 and final.age == pytest.approx(30.6)  # median; shown held by hysteresis
    assert final.age_std == shown.age_std and final.gender == shown.gender == "male"
    record = state.final().record()
    assert list(record) == ["age", "age_std", "gender", "gender_confidence"]
    assert record["age"] == 30.6 and state.shown().record()["age"] == 30
