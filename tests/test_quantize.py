"""export.quantize on the shipped backbone and real faces: an int8 copy whose outputs stay
close to the float32 model's, that serves through the same metadata."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from export.metadata import read_metadata
from export.quantize import QuantizeOptions, quantize
from realtime.paths import BACKBONE_MODEL, ROOT


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "faceres-int8.onnx"
    report = quantize(QuantizeOptions(BACKBONE_MODEL, out, calibration_faces=16, check_faces=24))
    return out, report


def test_the_copy_has_int8_convolutions_and_the_same_contract(quantized):
    out, report = quantized
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    convs = [n.op_type for n in onnx.load(str(BACKBONE_MODEL)).graph.node].count("Conv")
    # every convolution reads int8 weights through a DequantizeLinear (QDQ), none is lost
    assert ops.count("Conv") == convs and ops.count("DequantizeLinear") >= 2 * convs
    meta, original = read_metadata(out), read_metadata(BACKBONE_MODEL)
    assert meta.name == original.name + "-int8" and "int8" in meta.provenance
    assert (meta.input_name, meta.input_size, meta.mean, meta.scale) == (original.input_name, original.input_size, original.mean, original.scale)
    assert meta.metrics["int8_vs_float32"] == report["change"]
    assert report["bytes"] < BACKBONE_MODEL.stat().st_size / 2


def test_outputs_stay_close_on_held_out_faces(quantized):
    change = quantized[1]["change"]
    assert change["faces"] == 24
    assert 0 < change["mean_abs_p_male"] < 0.05 and change["mean_abs_age"] < 1.5
    assert change["gender_decisions_differ"] <= 2


def test_writing_over_the_source_is_refused():
    done = subprocess.run([sys.executable, "-m", "export.quantize", "--model", str(BACKBONE_MODEL), "--out", str(BACKBONE_MODEL)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == "error: --out must differ from --model"
