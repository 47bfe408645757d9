"""GPU memory and utilisation of this worker's devices, sampled into the `vlmq_gpu_*` gauges
with every heartbeat (nothing on a machine without CUDA)."""

from __future__ import annotations

import contextlib
import sys

from services.core import metrics


def sample_gpus(model: str) -> int:
    """Set the GPU gauges for every visible CUDA device; returns how many were sampled (none
    while nothing in this process has loaded torch: no model of its own is on a GPU)."""
    # Not imported here: a worker whose backend needs no torch starts without its seconds
    # of imports.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return 0
    count = torch.cuda.device_count()
    for index in range(count):
        device = f"cuda:{index}"
        metrics.GPU_MEMORY_ALLOCATED.labels(model, device).set(torch.cuda.memory_allocated(index))
        metrics.GPU_MEMORY_RESERVED.labels(model, device).set(torch.cuda.memory_reserved(index))
        # NVML (nvidia-ml-py) answers utilisation; a driver without it leaves the gauge unset.
        with contextlib.suppress(Exception):
            utilization = torch.cuda.utilization(index) / 100
            metrics.GPU_UTILIZATION.labels(model, device).set(utilization)
    return count
