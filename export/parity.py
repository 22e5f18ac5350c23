"""Compare two implementations of an age/gender model on the same input batches.

A *runner* is any callable that takes one preprocessed input batch and returns a dict
of named output arrays: ONNX Runtime, TensorFlow running the original graph, a fp16
copy. Raw outputs are compared through what the product shows: P(male), the gender
decision at 0.5 and the age estimate in years. That is what matters, whatever each
output's internal scale is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.metadata import ModelMetadata
from realtime.model import decode_outputs as decode_model_outputs

Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def ort_runner(model: str | Path | bytes, threads: int = 0) -> Runner:
    """A runner for an ONNX model on ONNX Runtime's CPU provider.

    threads=0 lets ONNX Runtime choose; tests pass a small number so that two parallel
    jobs on a 2-core CI machine don't fight over cores.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # fp16 models log a warning per inserted Cast otherwise
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(output_names, {input_name: batch})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(output_names, values)}

    return run


def decode_outputs(outputs: dict[str, np.ndarray], meta: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
    """P(male) and age in years, both shape (N,), from a runner's raw outputs, decoded as
    the live pipeline decodes them (`realtime.model.decode_outputs`)."""
    shown = decode_model_outputs(outputs[meta.age_output], outputs[meta.gender_output], meta)
    return shown.p_male.astype(np.float64), shown.age.astype(np.float64)


@dataclass(frozen=True)
class ParityReport:
    n: int
    max_abs_p_male: float
    max_abs_age: float  # years
    mean_abs_age: float
    gender_agreement: float  # fraction of faces where both say the same gender at 0.5

    def __str__(self) -> str:
        return (
            f"n={self.n} max|dP(male)|={self.max_abs_p_male:.2e} "
            f"max|d age|={self.max_abs_age:.2g} y (mean {self.mean_abs_age:.2g}) "
            f"gender agreement={self.gender_agreement:.2%}"
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "max_abs_p_male": round(self.max_abs_p_male, 6),
            "max_abs_age": round(self.max_abs_age, 4),
            "gender_agreement": round(self.gender_agreement, 4),
        }


def compare_runners(
    reference: Runner,
    candidate: Runner,
    batches: Iterable[np.ndarray],
    meta: ModelMetadata,
    candidate_meta: ModelMetadata | None = None,
) -> ParityReport:
    """Run both runners on every batch and report the largest differences.

    `candidate_meta` is for a candidate whose output names differ from the reference's;
    both must take the same preprocessed input.
    """
    candidate_meta = candidate_meta or meta
    ref_p, ref_age, cand_p, cand_age = [], [], [], []
    for batch in batches:
        p, age = decode_outputs(reference(batch), meta)
        ref_p.append(p)
        ref_age.append(age)
        p, age = decode_outputs(candidate(batch), candidate_meta)
        cand_p.append(p)
        cand_age.append(age)
    if not ref_p:
        raise ValueError("compare_runners got no batches")
    rp, ra, cp, ca = (np.concatenate(v) for v in (ref_p, ref_age, cand_p, cand_age))
    if rp.shape != cp.shape:
        raise ValueError(f"runners returned {rp.shape} and {cp.shape} gender values")
    d_age = np.abs(ra - ca)
    return ParityReport(
        n=int(rp.size),
        max_abs_p_male=float(np.max(np.abs(rp - cp))),
        max_abs_age=float(np.max(d_age)),
        mean_abs_age=float(np.mean(d_age)),
        gender_agreement=float(np.mean((rp > 0.5) == (cp > 0.5))),
    )
