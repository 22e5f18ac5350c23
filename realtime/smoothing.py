"""Per-person estimates over time: one smoother per face attribute, pure math inside.

A single inference is noisy (a blink, a turned head, motion blur), so each track keeps
its recent model outputs, weighted by the quality of the view they came from:

- age: the weighted median of recent estimates, with a robust spread (1.4826 x weighted
  median absolute deviation, which equals the standard deviation for normal noise but
  ignores a few wild estimates);
- gender: the view-weighted mean of recent logits of P(male), which the model gives
  calibrated (`realtime.calibration`), shrunk towards 0 until the views add up to one
  full-quality view; the confidence is the logistic of its absolute value. A mean, not
  a sum: a face's frames repeat one face, and the model's mistakes on a face (a
  toddler's, say) repeat with it, so a hundred frames of a calibrated 70% are still
  70% sure, not certain. Averaging removes the frame-to-frame noise, not what the face
  itself leaves open, so the confidence is that of one clean view: conservative.

What is shown is held back until it is trustworthy and changes only with real
evidence: a gender appears once its confidence passes a threshold the user sets
(`gender_threshold`; below it the gender is uncertain and shown as such) and flips
only when the opposite side passes it too; an age appears
after a few inferences and moves only when the estimate moves by more than a margin,
so the overlay never jitters from frame to frame.

Adding an attribute (say head pose or expression) is a model output (a field of
`model.Predictions`), a `Smoother` class here listed in `ATTRIBUTES`, and the fields it
fills in `Estimates`; the analyzer, the results and the JSON outputs carry it from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Gender = Literal["male", "female"]
# one face's model outputs by name: the fields of model.Predictions, one row of them
FacePrediction = Mapping[str, float]


@dataclass(frozen=True)
class SmoothingOptions:
    history: int = 32  # inferences kept per track: bounded memory on long visits
    max_logit: float = 4.0  # one wild frame cannot outweigh several ordinary ones
    full_view: float = 1.0  # total view weight below which the gender evidence is shrunk
    # calibrated confidence needed to show a gender; below it the gender is "uncertain"
    gender_threshold: float = 0.8
    min_inferences: int = 2  # inferences needed before anything is shown
    age_hysteresis: float = 1.5  # years the estimate must move before the shown age changes


@dataclass(frozen=True)
class Estimates:
    """A face's attributes, as a frame shows them or a person's record keeps them.

    One field per value a smoother fills; None while not yet confident. A field's
    `decimals` metadata is the rounding of the JSON outputs.
    """

    age: float | None = field(default=None, metadata={"decimals": 1})  # whole years in a frame
    age_std: float | None = None
    gender: Gender | None = None
    gender_confidence: float | None = None

    def record(self) -> dict[str, Any]:
        """The fields as the frames and events JSON write them, in order."""
        out = {}
        for f in fields(self):
            value, decimals = getattr(self, f.name), f.metadata.get("decimals")
            out[f.name] = value if value is None or decimals is None else round(value, decimals)
        return out


@runtime_checkable
class Smoother(Protocol):
    """One attribute of a tracked face, smoothed over the track's inferences."""

    def update(self, prediction: FacePrediction, weight: float) -> None:
        """One more inference, from a view of quality `weight` (0..1)."""

    @property
    def settled(self) -> bool:
        """Its value is shown: the scheduler may stop refreshing the track eagerly."""

    def shown(self) -> dict[str, Any]:
        """`Estimates` fields as a frame shows them: held still, None until confident."""

    def final(self) -> dict[str, Any]:
        """`Estimates` fields as the person's record keeps them when the track ends."""


def logit(p: float, limit: float) -> float:
    p = min(max(float(p), 1e-7), 1.0 - 1e-7)
    return max(-limit, min(limit, math.log(p / (1.0 - p))))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def view_weight(weight: float) -> float:
    """A view's vote: its quality, with a floor so that every inference counts a little."""
    return float(min(max(weight, 1e-3), 1.0))


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w)
    return float(v[np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def robust_spread(values: np.ndarray, weights: np.ndarray, center: float) -> float:
    """1.4826 x weighted median absolute deviation: the std for normal data, robust to outliers."""
    return 1.4826 * weighted_median(np.abs(values - center), weights)


@dataclass(frozen=True)
class AgeState:
    ages: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    inferences: int = 0
    shown: float | None = None


def age_estimate(state: AgeState) -> tuple[float, float] | None:
    """The weighted median age and its robust spread, or None before any inference."""
    if not state.ages:
        return None
    values = np.asarray(state.ages, np.float64)
    weights = np.asarray(state.weights, np.float64)
    center = weighted_median(values, weights)
    return center, robust_spread(values, weights, center)


def update_age(state: AgeState, age: float, weight: float, options: SmoothingOptions = SmoothingOptions()) -> AgeState:
    """The state after one more age inference from a view of quality `weight`."""
    new = AgeState(
        ages=(state.ages + (float(age),))[-options.history :],
        weights=(state.weights + (view_weight(weight),))[-options.history :],
        inferences=state.inferences + 1,
        shown=state.shown,
    )
    return replace(new, shown=next_shown_age(new, options))


def next_shown_age(state: AgeState, options: SmoothingOptions) -> float | None:
    estimate = age_estimate(state)
    if estimate is None or state.inferences < options.min_inferences:
        return state.shown
    center, _ = estimate
    if state.shown is None or abs(center - state.shown) >= options.age_hysteresis:
        return center
    return state.shown


@dataclass(frozen=True)
class GenderState:
    logits: tuple[float, ...] = ()  # recent clipped logits of P(male)
    weights: tuple[float, ...] = ()
    inferences: int = 0
    shown: Gender | None = None


def gender_log_odds(logits: Sequence[float], weights: Sequence[float], full_view: float = 1.0) -> float:
    """The view-weighted mean of the logits, shrunk towards 0 while the weights add up to
    less than `full_view` (a few poor views say less than one good one)."""
    if not logits:
        return 0.0
    w = np.asarray(weights, np.float64)
    return float(np.dot(w, np.asarray(logits, np.float64)) / max(float(w.sum()), full_view))


def gender_estimate(log_odds: float) -> tuple[Gender, float]:
    label: Gender = "male" if log_odds >= 0 else "female"
    return label, sigmoid(abs(log_odds))


def update_gender(state: GenderState, p_male: float, weight: float, options: SmoothingOptions = SmoothingOptions()) -> GenderState:
    """The state after one more inference of P(male) from a view of quality `weight`."""
    new = GenderState(
        logits=(state.logits + (logit(p_male, options.max_logit),))[-options.history :],
        weights=(state.weights + (view_weight(weight),))[-options.history :],
        inferences=state.inferences + 1,
        shown=state.shown,
    )
    return replace(new, shown=next_shown_gender(new, options))


def next_shown_gender(state: GenderState, options: SmoothingOptions) -> Gender | None:
    if state.inferences < options.min_inferences:
        return state.shown
    label, confidence = gender_estimate(gender_log_odds(state.logits, state.weights, options.full_view))
    return label if confidence >= options.gender_threshold else state.shown


class AgeSmoother:
    """Apparent age in years, from the model's `age` output."""

    def __init__(self, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.options = options
        self.state = AgeState()

    def update(self, prediction: FacePrediction, weight: float) -> None:
        self.state = update_age(self.state, prediction["age"], weight, self.options)

    @property
    def settled(self) -> bool:
        return self.state.shown is not None

    def shown(self) -> dict[str, Any]:
        estimate = age_estimate(self.state)
        if self.state.shown is None or estimate is None:
            return {"age": None, "age_std": None}
        return {"age": int(round(self.state.shown)), "age_std": round(estimate[1], 1)}

    def final(self) -> dict[str, Any]:
        # the record keeps the full estimate, not the display's hysteresis-held value
        estimate = age_estimate(self.state)
        shown = self.shown()
        return {"age": None if estimate is None or shown["age"] is None else estimate[0], "age_std": shown["age_std"]}


class GenderSmoother:
    """Apparent gender, from the model's `p_male` output."""

    def __init__(self, options: SmoothingOptions = SmoothingOptions()) -> None:
        self.options = options
        self.state = GenderState()

    def update(self, prediction: FacePrediction, weight: float) -> None:
        self.state = update_gender(self.state, prediction["p_male"], weight, self.options)

    @property
    def settled(self) -> bool:
        return self.state.shown is not None

    def shown(self) -> dict[str, Any]:
        if self.state.shown is None:
            return {"gender": None, "gender_confidence": None}
        label, confidence = gender_estimate(gender_log_odds(self.state.logits, self.state.weights, self.options.full_view))
        # while contrary evidence builds up the shown label stays; its confidence says so
        agreeing = confidence if label == self.state.shown else 1.0 - confidence
        return {"gender": self.state.shown, "gender_confidence": round(agreeing, 3)}

    def final(self) -> dict[str, Any]:
        return self.shown()


# the attributes the analyzer estimates for every face, in the order of their fields
ATTRIBUTES: tuple[Callable[[SmoothingOptions], Smoother], ...] = (AgeSmoother, GenderSmoother)


class FaceEstimates:
    """Every attribute's smoother for one track."""

    def __init__(
        self, options: SmoothingOptions = SmoothingOptions(), attributes: Sequence[Callable[[SmoothingOptions], Smoother]] = ATTRIBUTES
    ) -> None:
        self.smoothers = [make(options) for make in attributes]

    def update(self, prediction: FacePrediction, weight: float) -> None:
        for smoother in self.smoothers:
            smoother.update(prediction, weight)

    @property
    def settled(self) -> bool:
        return all(s.settled for s in self.smoothers)

    def shown_fields(self) -> dict[str, Any]:
        return {k: v for s in self.smoothers for k, v in s.shown().items()}

    def final_fields(self) -> dict[str, Any]:
        return {k: v for s in self.smoothers for k, v in s.final().items()}

    def shown(self) -> Estimates:
        return Estimates(**self.shown_fields())

    def final(self) -> Estimates:
        return Estimates(**self.final_fields())
