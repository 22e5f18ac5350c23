"""Gender calibration: a model's P(male) turned into how often such a face really is male.

A model's raw probability can be too sure of itself, and not evenly so: on children's
faces, which carry little gender signal, the default model's heads say 0.9 where they
are right about three times in four. A calibration is a logistic map of the raw
logit whose slope and offset depend on the face's estimated age,

    calibrated_logit = slope(age) * logit(p_male) + offset(age),

with slope and offset interpolated linearly between a few age knots (and held at the
end values beyond them), so a toddler's 0.9 can become 0.8 while an adult's stays 0.9,
without a jump at any age. `training.calibrate` fits it on out-of-fold predictions of
the training faces (slopes only by default: then it never changes a face's label, only
how sure the label is), and the model's metadata carries it (`gender_calibration`), so
every consumer of `p_male` (the overlay, the smoothing, the kiosk, the evaluation)
sees the calibrated value. Slopes are positive, so at any age a higher raw P(male)
always gives a higher calibrated one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

P_CLIP = 1e-6  # keeps logit finite for a model that outputs exactly 0 or 1


@dataclass(frozen=True)
class GenderCalibration:
    age_knots: tuple[float, ...]  # years, increasing
    slope: tuple[float, ...]  # one per knot, > 0
    offset: tuple[float, ...]  # one per knot
    fitted_on: str = ""  # which faces and predictions it was fitted on, in words

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str:
        """Why these values cannot be a calibration; empty when they can."""
        n = len(self.age_knots)
        if n == 0 or len(self.slope) != n or len(self.offset) != n:
            return "gender_calibration needs as many slopes and offsets as age knots, at least one"
        values = [*self.age_knots, *self.slope, *self.offset]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            return "gender_calibration holds a value that is not a finite number"
        if any(b <= a for a, b in zip(self.age_knots, self.age_knots[1:])):
            return "gender_calibration's age knots are not increasing"
        if any(s <= 0 for s in self.slope):
            return "gender_calibration has a slope that is not positive"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"age_knots": list(self.age_knots), "slope": list(self.slope), "offset": list(self.offset), "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GenderCalibration":
        try:
            return cls(
                tuple(values["age_knots"]), tuple(values["slope"]), tuple(values["offset"]), str(values.get("fitted_on", ""))
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"gender_calibration is malformed ({exc})") from None


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, np.float64), P_CLIP, 1.0 - P_CLIP)
    return np.log(q / (1.0 - q))


def hat_basis(age: np.ndarray, knots: tuple[float, ...]) -> np.ndarray:
    """(N, K) weights of each knot for each age: linear interpolation, constant beyond
    the ends. Each row sums to 1, so a per-knot value is interpolated by `basis @ values`."""
    age = np.clip(np.asarray(age, np.float64), knots[0], knots[-1])
    eye = np.eye(len(knots))
    return np.stack([np.interp(age, knots, eye[k]) for k in range(len(knots))], axis=1)


def calibrated_logit(p_male: np.ndarray, age: np.ndarray, calibration: GenderCalibration) -> np.ndarray:
    basis = hat_basis(age, calibration.age_knots)
    slope = basis @ np.asarray(calibration.slope, np.float64)
    offset = basis @ np.asarray(calibration.offset, np.float64)
    return slope * logit(p_male) + offset


def calibrate_p_male(p_male: np.ndarray, age: np.ndarray, calibration: GenderCalibration | None) -> np.ndarray:
    """Calibrated P(male) for faces of estimated `age` (float32); unchanged without a calibration."""
    if calibration is None:
        return np.asarray(p_male, np.float32)
    z = calibrated_logit(p_male, age, calibration)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
