"""What a worker's task thread runs: the fairest unit of work of its model waiting then (see
`services.core.fair_queue`), taken straight from the fair queue (see `workers.consumer`).

A unit is one interactive job, or a chunk of one tenant's batch lines. A job that turns out
to have nothing to do (canceled, expired, run already) gives its charge back, and the
thread takes the next unit instead.

While every task thread is busy, no thread is free to take a newcomer's job until one of
the running jobs ends, which under a flood of equally long answers may be a whole
generation away. The newcomer watch (`NewcomerWatch`) looks for interactive work of tenants
with nothing running in this worker meanwhile, and runs it in a few threads of its own; the
scheduler gives such a request a row over the full batch (see `ContinuousScheduler`). It
looks when interactive work is announced on the fair queue's arrivals channel (and every
`fallback_s` besides, for an announcement missed while Redis reconnected), never in a
polling loop: a worker saturated by one tenant's bulk work spends nothing on the watch.
"""

from __future__ import annotations

import threading
import time

import structlog

from services.core.bands import Band
from services.core.fair_queue import Picked
from workers.batch_lines import run_chunk
from workers.doorbell import Doorbell
from workers.pipeline import run_job
from workers.state import WorkerState

log = structlog.get_logger(__name__)
# Units a thread may find with nothing to do before it rests (a burst of cancels).
MAX_SKIPPED = 64


def run_next(state: WorkerState) -> str:
    """Take the fairest unit of work of this worker's model and run it to a terminal state;
    returns what happened (for logs and tests)."""
    with state.in_flight.thread():
        for _ in range(MAX_SKIPPED):
            outcome, picked = take_and_run(state)
            if picked is None:
                return "idle"
            if outcome != "skipped":
                return outcome
            log.info("unit_skipped", job_ids=picked.job_ids)
            refund(state, picked)
    return "skipped"


def take_and_run(state: WorkerState) -> tuple[str, Picked | None]:
    """Pick a unit and run it. A chunk of batch lines is taken only while one of the
    worker's chunk-loading slots is free (held until the chunk is recorded); with none free,
    interactive work is still taken at once."""
    scheduler = state.wait_ready()
    runtime = state.runtime
    loading = state.chunk_loading.acquire(blocking=False)
    try:
        picked = pick(state, allow_batch=loading)
        if picked is None and not loading:
            # Only batch lines may be waiting: wait for a slot, then look again.
            state.chunk_loading.acquire()
            loading = True
            picked = pick(state, allow_batch=True)
        if picked is None:
            return "idle", None
        with state.in_flight.running(picked.tenant_id):
            if picked.band == Band.BATCH:
                return run_chunk(runtime, scheduler, state.leases, picked.job_ids), picked
            if loading:  # an interactive job holds no chunk slot
                state.chunk_loading.release()
                loading = False
            return run_job(runtime, scheduler, state.leases, picked.job_ids[0]), picked
    finally:
        if loading:
            state.chunk_loading.release()


def pick(
    state: WorkerState,
    *,
    allow_batch: bool,
    last_band: Band = Band.BATCH,
    excluded: frozenset[str] = frozenset(),
) -> Picked | None:
    """The next unit of work from the fair queue (None when nothing waits)."""
    settings = state.settings
    return state.runtime.broker.fair.pick(
        allow_batch=allow_batch,
        chunk=settings.max_batch,
        batch_share=settings.batch_min_share,
        hold_s=settings.lease_s,
        last_band=last_band,
        excluded=excluded,
    )


class NewcomerWatch:
    """While all `threads` task threads are busy, looks for interactive work of a tenant
    with nothing running here whenever some is announced (and every `fallback_s`), at most
    once per `min_gap_s`, and runs it in one of `spare` threads of its own (see the
    module)."""

    def __init__(
        self,
        state: WorkerState,
        doorbell: Doorbell,
        threads: int,
        spare: int,
        fallback_s: float,
        min_gap_s: float,
    ) -> None:
        self.state, self.doorbell = state, doorbell
        state.in_flight.threads = threads
        self.fallback_s, self.min_gap_s = fallback_s, min_gap_s
        self.spare = threading.BoundedSemaphore(max(1, spare))

    def start(self) -> None:
        """Watch from a daemon thread."""
        threading.Thread(target=self._watch, name="vlmq-newcomers", daemon=True).start()

    def _watch(self) -> None:
        state, doorbell = self.state, self.doorbell
        state.wait_ready()
        seen = doorbell.interactive_rings
        while True:
            # Asleep until every task thread is busy: an idle or lightly loaded worker pays
            # nothing for the watch (an announcement made meanwhile is seen at the next
            # wait, which then returns at once).
            state.in_flight.saturated.wait()
            doorbell.wait_interactive(seen, self.fallback_s)
            seen = doorbell.interactive_rings
            self._look()
            # At most one look per gap, taken after a look rather than before it: a
            # newcomer's job is looked for as soon as it is announced, and announcements
            # made meanwhile are seen at the next wait, which then returns at once.
            time.sleep(self.min_gap_s)

    def _look(self) -> None:
        """Run a newcomer's interactive job in a spare thread, if a spare thread is free
        while all task threads are busy, and such a job waits."""
        state = self.state
        if not state.in_flight.saturated.is_set() or not self.spare.acquire(blocking=False):
            return
        try:
            picked = pick(
                state,
                allow_batch=False,
                last_band=Band.DEFAULT,
                excluded=state.in_flight.tenants(),
            )
        except Exception:
            log.warning("newcomer_pick_failed", exc_info=True)
            picked = None
        if picked is None:
            self.spare.release()
            return
        threading.Thread(
            target=self._run, args=(picked,), name="vlmq-newcomer", daemon=True
        ).start()

    def _run(self, picked: Picked) -> None:
        state = self.state
        try:
            with state.in_flight.running(picked.tenant_id):
                outcome = run_job(
                    state.runtime, state.wait_ready(), state.leases, picked.job_ids[0]
                )
            if outcome == "skipped":
                refund(state, picked)
        except Exception:
            log.exception("newcomer_failed", job_id=picked.job_ids[0])
        finally:
            self.spare.release()


def refund(state: WorkerState, picked: Picked) -> None:
    """Give back the charge of a unit that did not run."""
    try:
        state.runtime.broker.fair.settle(picked.refunds())
    except Exception:
        log.warning("refund_failed", jobs=len(picked.costs))
