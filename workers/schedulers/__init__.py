"""Model-call scheduling: task threads submit requests, one thread runs them through the
model together, with the backend's continuous-batching engine where it has one, else in
static calls."""

from __future__ import annotations

from collections.abc import Callable

from workers.backends.base import ContinuousBackend, VLMBackend
from workers.schedulers.base import CallResult, RequestCanceled, Scheduler
from workers.schedulers.continuous import ContinuousScheduler
from workers.schedulers.static import StaticScheduler

__all__ = [
    "CallResult",
    "ContinuousScheduler",
    "RequestCanceled",
    "Scheduler",
    "StaticScheduler",
    "create_scheduler",
]


def create_scheduler(
    backend: VLMBackend,
    max_batch: int,
    wait_ms: float,
    *,
    prefill_wait_ms: float = 0.0,
    on_stuck: Callable[[], None] | None = None,
    on_call: Callable[[int], None] | None = None,
) -> Scheduler:
    """The scheduler for a set-up backend: continuous where it offers an engine, else static
    (`wait_ms` applies to static calls, `prefill_wait_ms` to continuous admissions)."""
    engine = backend.continuous_engine() if isinstance(backend, ContinuousBackend) else None
    if engine is None:
        return StaticScheduler(backend, max_batch, wait_ms, on_stuck=on_stuck, on_call=on_call)
    return ContinuousScheduler(
        backend, engine, max_batch, prefill_wait_ms, on_stuck=on_stuck, on_call=on_call
    )
