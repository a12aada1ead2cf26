"""Which accelerator this Python worker should use.

On a Spark GPU cluster each task is granted a GPU address by the scheduler; using
`cuda:0` blindly would pile every task of a multi-GPU executor onto one card. The choice
is recomputed per call (it is cheap) because a reused Python worker can serve tasks that
were granted different GPUs.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any

import torch

log = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def spark_task_gpu_address() -> str | None:
    """The GPU address Spark granted the current task, or None outside a GPU task."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    ctx = TaskContext.get()
    if ctx is None:
        return None
    try:
        gpu = ctx.resources().get("gpu")
    except Exception:  # resources() is missing or fails on some Spark builds
        return None
    if gpu is None or not gpu.addresses:
        return None
    return str(gpu.addresses[0]).strip()


def _cuda_index(address: str) -> int:
    """Map a Spark GPU address to a torch CUDA ordinal, honouring CUDA_VISIBLE_DEVICES.

    Spark addresses are physical ids; when the worker only sees a subset of the cards,
    ordinal i is the i-th entry of CUDA_VISIBLE_DEVICES, not physical card i.
    """
    count = torch.cuda.device_count()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
    if visible and address in visible:
        index = visible.index(address)
    elif address.isdigit():
        index = int(address)
    else:
        index = -1
    if 0 <= index < count:
        return index
    log.warning(
        "Spark GPU address %r does not map to one of the %d visible CUDA devices; using cuda:0",
        address,
        count,
    )
    return 0


def select_device(prefer_gpu: bool = True) -> torch.device:
    """The Spark task's GPU, else cuda:0 when CUDA is available, else the CPU."""
    if not prefer_gpu or not torch.cuda.is_available():
        return torch.device("cpu")
    address = spark_task_gpu_address()
    if address is None:
        return torch.device("cuda", 0)
    return torch.device("cuda", _cuda_index(address))


def inference_dtype(device: torch.device | str, preference: str = "fp16") -> torch.dtype:
    """Half precision only where it pays off (CUDA); CPU kernels stay in float32."""
    if preference not in _DTYPES:
        raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {preference!r}")
    if torch.device(device).type != "cuda":
        return torch.float32
    return _DTYPES[preference]


def ort_cuda_available() -> bool:
    """True when this onnxruntime build can run on CUDA (onnxruntime-gpu and a visible GPU)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers() and ort.get_device() == "GPU"


def ort_providers(device: torch.device | str | None = None) -> list[Any]:
    """onnxruntime providers for `device` (default: `select_device()`), CPU as the fallback."""
    dev = select_device() if device is None else torch.device(device)
    if dev.type == "cuda" and ort_cuda_available():
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    if dev.type == "cuda":
        _warn_cpu_onnxruntime()
    return ["CPUExecutionProvider"]


@functools.lru_cache(maxsize=1)
def _warn_cpu_onnxruntime() -> None:
    """Once per worker: a GPU is there but OCR will run on the CPU."""
    warnings.warn(
        "a GPU is available but onnxruntime has no CUDAExecutionProvider: OCR runs on the "
        "CPU. The CPU wheel `onnxruntime` is installed (or shadows onnxruntime-gpu: both "
        "own the same module); install only onnxruntime-gpu on GPU nodes "
        "(pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu)",
        RuntimeWarning, stacklevel=3)
