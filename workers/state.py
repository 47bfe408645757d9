"""Per-process worker state: the runtime, the loaded model, heartbeat and maintenance threads.

Created when the worker process starts (never at import time; the threads pool never
forks), so each worker process loads the model exactly once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator

import structlog

from services.core import metrics
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.heartbeats import beat_model_worker, report_load_failure
from services.core.maintenance import run_pass_if_leader
from workers.backends.base import VLMBackend
from workers.backends.registry import create_backend
from workers.cpu_threads import limit_model_threads
from workers.gpu_stats import sample_gpus
from workers.leases import LeaseKeeper
from workers.schedulers import Scheduler, create_scheduler

log = structlog.get_logger(__name__)
# Chunks of batch lines holding decoded images at once: one in the model, one ready next.
CHUNKS_LOADED = 2
# The exit codes of a worker whose model failed to load, or hangs in a call.
MODEL_LOAD_FAILED = 3
MODEL_STUCK = 4


class InFlight:
    """What this worker's task threads are doing: how many are busy, and the tenants whose
    work they run."""

    def __init__(self, threads: int = 0) -> None:
        self._lock = threading.Lock()
        self._tenants: Counter[str] = Counter()
        self.busy = 0
        # How many task threads the worker has (0: unknown), and whether all are busy.
        self.threads = threads
        self.saturated = threading.Event()

    @contextlib.contextmanager
    def thread(self) -> Iterator[None]:
        """Count a task thread as busy."""
        with self._lock:
            self.busy += 1
            if self.threads and self.busy >= self.threads:
                self.saturated.set()
        try:
            yield
        finally:
            with self._lock:
                self.busy -= 1
                if self.busy < self.threads:
                    self.saturated.clear()

    @contextlib.contextmanager
    def running(self, tenant: str) -> Iterator[None]:
        """Count a unit of a tenant's work as running here."""
        with self._lock:
            self._tenants[tenant] += 1
        try:
            yield
        finally:
            with self._lock:
                self._tenants[tenant] -= 1
                if self._tenants[tenant] <= 0:
                    del self._tenants[tenant]

    def tenants(self) -> frozenset[str]:
        """The tenants with work running here."""
        with self._lock:
            return frozenset(self._tenants)


class WorkerState:
    """The model and connections of one worker process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = create_runtime(settings)
        self.backend: VLMBackend = create_backend(settings)
        # Chosen once the model is loaded: the backend's engine decides which.
        self.scheduler: Scheduler | None = None
        self.leases = LeaseKeeper(self.runtime)
        self.chunk_loading = threading.BoundedSemaphore(CHUNKS_LOADED)
        self.in_flight = InFlight()
        self.ready = threading.Event()

    def start(self) -> None:
        """Load the model, then start lease renewal, the heartbeat and the maintenance pass.

        Runs before the worker consumes anything. A model that fails to load ends the
        process with `MODEL_LOAD_FAILED`: a worker that cannot serve must not take jobs off
        the queue. The reason is left in Redis for `/readyz`, and the supervisor restarts
        the worker with backoff.
        """
        log.info("model_cpu_threads", threads=limit_model_threads(self.settings))
        try:
            self.backend.setup(self.settings.device)
        except BaseException as exc:
            log.exception("model_load_failed")
            try:
                report_load_failure(
                    self.runtime.redis, self.settings.model_id, f"{type(exc).__name__}: {exc}"
                )
            finally:
                os._exit(MODEL_LOAD_FAILED)
        model = self.settings.model_id
        self.scheduler = create_scheduler(
            self.backend,
            self.settings.max_batch,
            self.settings.batch_wait_ms,
            prefill_wait_ms=self.settings.prefill_wait_ms,
            on_stuck=exit_stuck,
            on_call=lambda size: metrics.model_call(model, size),
        )
        self.ready.set()
        metrics.start_model_series(self.settings.model_id)
        self.leases.start()
        threading.Thread(target=self._heartbeat, name="vlmq-heartbeat", daemon=True).start()
        threading.Thread(target=self._maintain, name="vlmq-maintenance", daemon=True).start()

    def wait_ready(self) -> Scheduler:
        """The scheduler of the loaded model (loaded before the worker consumes anything)."""
        self.ready.wait()
        if self.scheduler is None:
            raise RuntimeError("the worker state is ready only once its scheduler exists")
        return self.scheduler

    def _heartbeat(self) -> None:
        """Announce a live worker with its model loaded (read by `/readyz`)."""
        interval = self.settings.worker_heartbeat_s
        while True:
            try:
                beat_model_worker(self.runtime.redis, self.settings.model_id, interval)
            except Exception:
                log.warning("heartbeat_failed")
            try:
                sample_gpus(self.settings.model_id)
            except Exception:
                log.warning("gpu_sample_failed", exc_info=True)
            time.sleep(interval)

    def _maintain(self) -> None:
        """Every interval, run the maintenance pass (one worker of the deployment at a time)."""
        while True:
            time.sleep(self.settings.reconcile_interval_s)
            try:
                requeued = run_pass_if_leader(self.runtime)
                if requeued:
                    log.info("maintenance_pass", requeued=requeued)
            except Exception:
                log.exception("maintenance_pass_failed")


def exit_stuck() -> None:
    """End a worker whose model call hangs: the supervisor starts a fresh one, and the jobs
    this one held run again once their leases lapse."""
    log.error("worker_exit", reason="model_stuck")
    os._exit(MODEL_STUCK)


_state: WorkerState | None = None


def init_state(settings: Settings) -> WorkerState:
    """Create and start this process's worker state."""
    global _state
    _state = WorkerState(settings)
    _state.start()
    return _state


def get_state() -> WorkerState:
    """This process's worker state (created by `init_state` when the worker started)."""
    if _state is None:
        raise RuntimeError("the worker state is created by the worker_init hook")
    return _state
