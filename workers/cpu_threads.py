"""How many threads the model's CPU work uses in a worker (`VLMQ_MODEL_CPU_THREADS`).

torch sizes its intra-op pool to every core by default. On a host where the API, the
worker's own task threads and Redis share those cores with the model, that pool's threads
compete with them for every small model call (and spin between calls), so the whole
service spends more CPU per job and answers fewer jobs per second (see
`docs/benchmarks.md`). A worker gives the model half the cores unless told otherwise.
"""

from __future__ import annotations

import os
import sys

from services.core.config import Settings


def model_cpu_threads(settings: Settings, cores: int | None = None) -> int:
    """The intra-op threads the model gets: the setting, or half the host's `cores`."""
    if settings.model_cpu_threads > 0:
        return settings.model_cpu_threads
    available = cores if cores is not None else os.cpu_count() or 1
    return max(1, available // 2)


def limit_model_threads(settings: Settings) -> int:
    """Size the model's thread pools before the backend loads it; returns the thread count.

    The environment variables reach whatever OpenMP or MKL pool a backend's libraries
    start later; a torch already imported is told directly.
    """
    threads = model_cpu_threads(settings)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads
