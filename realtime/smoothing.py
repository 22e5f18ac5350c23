"""Per-person estimates over time: pure functions on an immutable state.

A single inference is noisy (a blink, a turned head, motion blur), so each track keeps
its recent model outputs, weighted by the quality of the view they came from:

- age: the weighted median of recent estimates, with a robust spread (1.4826 x weighted
  median absolute deviation, which equals the standard deviation for normal noise but
  ignores a few wild estimates);
- gender: accumulated log-odds. Each inference adds its clipped logit times its weight,
  scaled down because successive frames of one face are far from independent samples;
  the confidence is the logistic of the absolute total.

What is shown is held back until it is trustworthy and changes only with real
evidence: a gender appears once its confidence passes a threshold and flips only when
the opposite side passes it too (which accumulated evidence makes rare); an age appears
after a few inferences and moves only when the estimate moves by more than a margin,
so the overlay never jitters from frame to frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

Gender = Literal["male", "female"]


@dataclass(frozen=True)
class SmoothingOptions:
    history: int = 32  # inferences kept per track: bounded memory on long visits
    max_logit: float = 4.0  # one confident mistake cannot decide alone
    evidence_scale: float = 0.5  # successive frames are correlated; count each as half a sample
    max_log_odds: float = 12.0  # a long track can still be corrected by new evidence
    gender_threshold: float = 0.8  # confidence needed to show a gender
    min_inferences: int = 2  # inferences needed before anything is shown
    age_hysteresis: float = 1.5  # years the estimate must move before the shown age changes


@dataclass(frozen=True)
class TrackEstimate:
    ages: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    log_odds: float = 0.0
    inferences: int = 0
    shown_age: float | None = None
    shown_gender: Gender | None = None


@dataclass(frozen=True)
class Display:
    """What the overlay and outputs show: None while not yet confident."""

    age: int | None
    age_std: float | None
    gender: Gender | None
    gender_confidence: float | None


def logit(p: float, limit: float) -> float:
    p = min(max(float(p), 1e-7), 1.0 - 1e-7)
    return max(-limit, min(limit, math.log(p / (1.0 - p))))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w)
    return float(v[np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def robust_spread(values: np.ndarray, weights: np.ndarray, center: float) -> float:
    """1.4826 x weighted median absolute deviation: the std for normal data, robust to outliers."""
    return 1.4826 * weighted_median(np.abs(values - center), weights)


def age_estimate(state: TrackEstimate) -> tuple[float, float] | None:
    if not state.ages:
        return None
    values = np.asarray(state.ages, np.float64)
    weights = np.asarray(state.weights, np.float64)
    center = weighted_median(values, weights)
    return center, robust_spread(values, weights, center)


def gender_estimate(log_odds: float) -> tuple[Gender, float]:
    label: Gender = "male" if log_odds >= 0 else "female"
    return label, sigmoid(abs(log_odds))


def update(
    state: TrackEstimate,
    age: float,
    p_male: float,
    weight: float,
    options: SmoothingOptions = SmoothingOptions(),
) -> TrackEstimate:
    """The state after one more inference of age and P(male) from a view of quality `weight`."""
    weight = float(min(max(weight, 1e-3), 1.0))
    ages = (state.ages + (float(age),))[-options.history :]
    weights = (state.weights + (weight,))[-options.history :]
    evidence = options.evidence_scale * weight * logit(p_male, options.max_logit)
    log_odds = max(-options.max_log_odds, min(options.max_log_odds, state.log_odds + evidence))
    new = replace(state, ages=ages, weights=weights, log_odds=log_odds, inferences=state.inferences + 1)
    return replace(
        new,
        shown_age=next_shown_age(new, options),
        shown_gender=next_shown_gender(new, options),
    )


def next_shown_age(state: TrackEstimate, options: SmoothingOptions) -> float | None:
    estimate = age_estimate(state)
    if estimate is None or state.inferences < options.min_inferences:
        return state.shown_age
    center, _ = estimate
    if state.shown_age is None or abs(center - state.shown_age) >= options.age_hysteresis:
        return center
    return state.shown_age


def next_shown_gender(state: TrackEstimate, options: SmoothingOptions) -> Gender | None:
    if state.inferences < options.min_inferences:
        return state.shown_gender
    label, confidence = gender_estimate(state.log_odds)
    return label if confidence >= options.gender_threshold else state.shown_gender


def display(state: TrackEstimate) -> Display:
    estimate = age_estimate(state)
    age = age_std = None
    if state.shown_age is not None and estimate is not None:
        age, age_std = int(round(state.shown_age)), round(estimate[1], 1)
    confidence = None
    if state.shown_gender is not None:
        label, conf = gender_estimate(state.log_odds)
        # while contrary evidence builds up the shown label stays; its confidence says so
        confidence = round(conf if label == state.shown_gender else 1.0 - conf, 3)
    return Display(age=age, age_std=age_std, gender=state.shown_gender, gender_confidence=confidence)
