from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from udfs import device


class _FakeTaskContext:
    def __init__(self, addresses: list[str]) -> None:
        self._addresses = addresses

    def resources(self) -> dict:
        return {"gpu": SimpleNamespace(addresses=self._addresses)}


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend two CUDA devices exist so the address mapping can be tested on a CPU box."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _grant(monkeypatch, addresses: list[str]) -> None:
    pyspark = pytest.importorskip("pyspark")
    ctx = _FakeTaskContext(addresses)
    monkeypatch.setattr(pyspark.TaskContext, "get", lambda: ctx)


def test_cpu_fallback_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.select_device() == torch.device("cpu")
    assert device.ort_providers() == ["CPUExecutionProvider"]


def test_prefer_gpu_false_is_cpu():
    assert device.select_device(prefer_gpu=False) == torch.device("cpu")


def test_no_task_context_outside_spark():
    assert device.spark_task_gpu_address() is None


def test_no_pyspark_is_tolerated(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # makes `import pyspark` fail
    assert device.spark_task_gpu_address() is None


def test_spark_task_gpu_is_used(monkeypatch, fake_cuda):
    _grant(monkeypatch, ["1"])
    assert device.spark_task_gpu_address() == "1"
    assert device.select_device() == torch.device("cuda", 1)


def test_without_task_gpu_cuda0(monkeypatch, fake_cuda):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    assert device.select_device() == torch.device("cuda", 0)


def test_address_maps_through_cuda_visible_devices(monkeypatch, fake_cuda):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    _grant(monkeypatch, ["5"])
    assert device.select_device() == torch.device("cuda", 1)


def test_unmappable_address_falls_back_to_cuda0(monkeypatch, fake_cuda):
    _grant(monkeypatch, ["7"])
    assert device.select_device() == torch.device("cuda", 0)


def test_inference_dtype():
    for pref in ("fp16", "bf16", "fp32"):
        assert device.inference_dtype("cpu", pref) == torch.float32
    assert device.inference_dtype(torch.device("cuda", 0), "fp16") == torch.float16
    assert device.inference_dtype("cuda:0", "bf16") == torch.bfloat16
    assert device.inference_dtype("cuda", "fp32") == torch.float32
    with pytest.raises(ValueError, match="fp16"):
        device.inference_dtype("cpu", "half")


def test_ort_providers(monkeypatch):
    monkeypatch.setattr(device, "ort_cuda_available", lambda: False)
    assert device.ort_providers("cuda:1") == ["CPUExecutionProvider"]
    monkeypatch.setattr(device, "ort_cuda_available", lambda: True)
    assert device.ort_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert device.ort_providers("cpu") == ["CPUExecutionProvider"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_gpu_selected():
    dev = device.select_device()
    assert dev.type == "cuda"
    x = torch.ones(4, device=dev, dtype=device.inference_dtype(dev, "fp16"))
    assert x.dtype == torch.float16
    assert float(x.sum()) == 4.0
