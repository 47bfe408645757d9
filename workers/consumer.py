"""A model worker process: task threads that take work straight from the fair queue.

Each task thread runs the fairest unit of work waiting (`workers.dispatch.run_next`), again
and again, and when none waits sleeps until the fair queue announces more (`Doorbell`), or
`IDLE_LOOK_S` passes. No broker message stands for a job: the fair queue holds the work, a
job's held mark and then its lease say who has it, and the maintenance pass puts back
whatever a dead worker held. So no message is published by the API or consumed and
acknowledged here per job, and none can be lost or delivered twice.

SIGTERM or SIGINT: no new unit is taken; the units running are given `STOP_GRACE_S` to
finish, and whatever is still running then is run again elsewhere once its lease lapses.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

import structlog

from services.core.config import Settings
from services.core.logs import configure_logging
from workers.dispatch import NewcomerWatch, run_next
from workers.doorbell import Doorbell
from workers.observability import serve_metrics
from workers.schedulers.continuous import headroom_rows
from workers.state import WorkerState, init_state

log = structlog.get_logger(__name__)
# The newcomer watch looks when interactive work is announced, at most every
# NEWCOMER_GAP_S, and every NEWCOMER_FALLBACK_S in any case (see `workers.dispatch`).
NEWCOMER_GAP_S = 0.005
NEWCOMER_FALLBACK_S = 0.5
# An idle thread looks at the fair queue this often even without an announcement (one was
# missed while Redis reconnected, or the maintenance pass freed a held job).
IDLE_LOOK_S = 1.0
# Below the supervisor's 15 s between its SIGTERM and its SIGKILL.
STOP_GRACE_S = 12.0


def worker_threads(settings: Settings) -> int:
    """Task threads: enough to fill one batch while the previous one runs."""
    return max(2, 2 * settings.max_batch)


class Consumer:
    """The task threads of one worker process, and their stop."""

    def __init__(self, state: WorkerState, doorbell: Doorbell, threads: int) -> None:
        self.state, self.doorbell, self.threads = state, doorbell, threads
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the task threads."""
        for number in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"vlmq-task-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_s: float) -> int:
        """Take no new unit, and wait up to `grace_s` for the running ones; returns how many
        threads were still running a unit then."""
        self.stopping.set()
        self.doorbell.stop()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        state, doorbell = self.state, self.doorbell
        state.wait_ready()
        while not self.stopping.is_set():
            seen = doorbell.rings
            try:
                outcome = run_next(state)
            except Exception:
                # The job's own failure is recorded by the pipeline; this is Redis or the
                # database failing around it: the held mark or lease brings the job back.
                log.exception("unit_failed")
                outcome = "idle"
            if outcome == "idle":
                doorbell.wait(seen, IDLE_LOOK_S)


def run_worker(settings: Settings) -> None:
    """Run a model worker in the foreground (one process per GPU), until SIGTERM or SIGINT."""
    configure_logging(settings)
    stop_signal = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker_stopping", signal=signal.Signals(signum).name)
        stop_signal.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The model loads before any work is taken: a worker that cannot serve takes none.
    state = init_state(settings)
    fair = state.runtime.broker.fair
    doorbell = Doorbell(state.runtime.redis, fair.arrivals_channel)
    doorbell.start()
    threads = worker_threads(settings)
    NewcomerWatch(
        state,
        doorbell,
        threads,
        # One thread per headroom row the scheduler keeps for newcomers.
        spare=headroom_rows(settings.max_batch),
        fallback_s=NEWCOMER_FALLBACK_S,
        min_gap_s=NEWCOMER_GAP_S,
    ).start()
    serve_metrics(settings)
    consumer = Consumer(state, doorbell, threads)
    consumer.start()
    log.info("worker_ready", queue=settings.infer_queue, threads=threads, pid=os.getpid())
    while not stop_signal.wait(1.0):
        pass
    left = consumer.stop(STOP_GRACE_S)
    log.info("worker_stopped", units_left_running=left)
    state.leases.stop()
    # Daemon threads may sit in a model call: leave without waiting for them.
    os._exit(0)
