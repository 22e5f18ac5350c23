"""Execution-provider choice for --device, on the provider lists a CPU and a GPU build offer."""

from __future__ import annotations

import pytest

from realtime.errors import UserError
from realtime.model import AgeGenderModel, requested_providers

CPU_BUILD = ["CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_prefers_tensorrt_then_cuda_then_cpu():
    assert requested_providers("auto", GPU_BUILD) == GPU_BUILD
    assert requested_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert requested_providers("auto", CPU_BUILD) == CPU_BUILD


def test_explicit_devices_keep_their_fallbacks():
    assert requested_providers("tensorrt", GPU_BUILD) == GPU_BUILD
    assert requested_providers("cuda", GPU_BUILD) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert requested_providers("cpu", GPU_BUILD) == CPU_BUILD


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_a_gpu_device_on_a_cpu_build_is_one_clear_error(device):
    with pytest.raises(UserError, match="not available.*gpu"):
        requested_providers(device, CPU_BUILD)


def test_unknown_device_is_refused():
    with pytest.raises(UserError, match="unknown device"):
        requested_providers("npu", CPU_BUILD)


def test_the_session_reports_the_providers_it_really_uses(model_path):
    import onnxruntime as ort

    model = AgeGenderModel.create(model_path, "auto", threads=1)
    available = ort.get_available_providers()
    assert model.providers and set(model.providers) <= set(available)
    assert model.providers[-1] == "CPUExecutionProvider"


def test_cpu_batches_run_in_chunks_with_the_same_results(model, labels):
    # eleven real faces: three chunks of at most four, concatenated in order
    import cv2
    import numpy as np

    from tests.conftest import read_face

    assert model.chunk == 4
    size = model.input_size
    crops = np.array([cv2.resize(read_face(row), (size, size)) for row in labels[::3000][:11]])
    together = model.predict(crops)
    alone = [model.predict(crop[None]) for crop in crops]
    np.testing.assert_allclose(together.age, [p.age[0] for p in alone], atol=1e-3)
    np.testing.assert_allclose(together.p_male, [p.p_male[0] for p in alone], atol=1e-4)
    assert together.age.std() > 1.0  # eleven different people, not one repeated answer
