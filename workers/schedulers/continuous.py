"""Continuous batching: requests join the running batch at the next decode step and leave
it when they finish; those the engine does not take (moderation scoring) run as one
`predict` call between steps."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import structlog

from services.core.bands import Band
from workers.backends.base import DecodeEngine, VLMBackend
from workers.schedulers.base import RANK_SPAN, CallResult, Pending, RequestCanceled, Scheduler

log = structlog.get_logger(__name__)

# Arrivals prefilled together without waiting for more (see `ContinuousScheduler._joining`).
PREFILL_COMPANY = 4
# Rows prefilled at once while the batch decodes (see `ContinuousScheduler._joining`): a
# prefill stops every row's decoding and a newcomer may arrive just after one began, so the
# groups are small (on the tiny test model, 4 rows made a quiet tenant's p99 3.0-3.4x its
# latency alone behind a flood, 2 rows 1.8-2.0x).
MAX_PREFILL_WHILE_DECODING = 2
# Arrivals wait for company (`prefill_wait_ms`) only while the batch holds at least
# max_batch / BUSY_SHARE rows: a prefill stops few rows of a small batch, and on a light
# load every arrival would otherwise pay the wait for company that never comes.
BUSY_SHARE = 2
# A full batch takes up to max_batch / HEADROOM_SHARE more rows (at least one) for tenants
# that have none in it (see `ContinuousScheduler._newcomers`).
HEADROOM_SHARE = 8


def headroom_rows(max_batch: int) -> int:
    """How many rows a full batch of `max_batch` takes over it for newcomer tenants."""
    return max(1, max_batch // HEADROOM_SHARE)


class ContinuousScheduler(Scheduler):
    """Drives a decode engine: admits waiting requests, then decodes one token for all."""

    def __init__(
        self,
        backend: VLMBackend,
        engine: DecodeEngine,
        max_batch: int,
        prefill_wait_ms: float = 0.0,
        on_stuck: Callable[[], None] | None = None,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.prefill_wait_s = max(0.0, prefill_wait_ms / 1000)
        # The requests in the engine's batch, by their row key.
        self.rows: dict[object, Pending] = {}
        # Rows over `max_batch` kept for tenants with no row in a full batch.
        self.headroom = headroom_rows(max_batch)
        super().__init__(backend, max_batch, on_stuck=on_stuck, on_call=on_call)

    def _loop(self) -> None:
        while True:
            self._admit()
            self._step()

    def _admit(self) -> None:
        """Prefill the requests that may join the batch now (waiting for one while it is
        empty); those the engine does not take run as a static call."""
        static: list[Pending] = []
        joining: list[Pending] = []
        for item in self._joining():
            if not self.engine.accepts(item.request):
                static.append(item)
            elif item.future.set_running_or_notify_cancel():
                joining.append(item)
        if joining:
            try:
                self._prefill(joining)
            except Exception:
                # One input can fail the shared prefill: each runs alone, so only the
                # request that causes the failure fails.
                log.warning("prefill_failed", size=len(joining), retrying=len(joining) > 1)
                for item in joining:
                    try:
                        self._prefill([item])
                    except Exception as exc:
                        item.future.set_exception(exc)
        if static:
            self._call(static)

    def _prefill(self, joining: list[Pending]) -> None:
        """Admit requests to the engine: finished ones are answered, the others are rows."""
        with self._model_call(joining):
            finished = self.engine.admit([(id(item), item.request) for item in joining])
        by_key: dict[object, Pending] = {id(item): item for item in joining}
        for done in finished:
            by_key.pop(done.key).future.set_result(CallResult(done.prediction, done.batch_size))
        self.rows.update(by_key)

    def _joining(self) -> list[Pending]:
        """The waiting requests that fit the batch: the first ones in priority order that
        share its company limit, up to that limit. Blocks while the batch is empty.

        While a busy batch decodes (half full or more), a few arrivals wait up to
        `prefill_wait_ms` for company: prompts prefilled together cost much less each than
        one by one, and the batch goes on decoding meanwhile; an arrival of a tenant with
        no row in the batch does not wait, and is prefilled without the others
        (`_newcomers_only`). A full batch still takes such arrivals into its headroom
        (`_newcomers`).
        """
        rows = self.rows
        joining = [] if rows else [self.pending.get()[2]]
        company = next(iter(rows.values())).company if rows else joining[0].company
        room = min(self.max_batch, company) - len(rows) - len(joining)
        if rows or (joining and joining[0].rank % RANK_SPAN == 0):
            # A prefill stops the batch's decoding: in small groups, no row (and no newcomer
            # waiting for the next admission) waits long for it. A tenant that had nothing
            # in this worker is not made to wait for a large group's prefill either.
            room = min(room, MAX_PREFILL_WHILE_DECODING)
        taken: list[tuple[Pending, int]] = []
        while room > 0:
            try:
                _, arrival, item = self.pending.get_nowait()
            except queue.Empty:
                break
            if item.company != company:
                self._put(item, arrival)  # joins when the batch has emptied, in its place
                break
            taken.append((item, arrival))
            room -= 1
        if rows and len(rows) + len(taken) >= min(self.max_batch, company):
            taken += self._newcomers(company, [item for item, _ in taken])
        if rows and self._has_newcomer(taken):
            return joining + [item for item, _ in self._newcomers_only(taken)]
        busy = len(rows) >= max(1, self.max_batch // BUSY_SHARE)
        if busy and taken and room > 0 and len(taken) < PREFILL_COMPANY:
            oldest = min(item.queued_at for item, _ in taken)
            if time.monotonic() - oldest < self.prefill_wait_s:
                for item, arrival in taken:
                    self._put(item, arrival)
                return []
        return joining + [item for item, _ in taken]

    def _has_newcomer(self, taken: list[tuple[Pending, int]]) -> bool:
        """Whether one of these requests is of a tenant with no row in the batch: it is not
        kept waiting for company (a tenant sending one job at a time would wait every time)."""
        present = {item.tenant for item in self.rows.values()}
        return any(item.tenant not in present for item, _ in taken)

    def _newcomers_only(self, taken: list[tuple[Pending, int]]) -> list[tuple[Pending, int]]:
        """The requests of tenants with no row in the batch; the others go back to wait for
        the next admission, so that a newcomer's prefill is not lengthened by their prompts
        (the batch decodes one step in between)."""
        present = {item.tenant for item in self.rows.values()}
        kept: list[tuple[Pending, int]] = []
        for item, arrival in taken:
            if item.tenant in present:
                self._put(item, arrival)
            else:
                kept.append((item, arrival))
        return kept

    def _newcomers(self, company: int, taken: list[Pending]) -> list[tuple[Pending, int]]:
        """Requests of tenants with no row in the full batch, admitted over `max_batch` into
        the batch's headroom: a tenant sending one job at a time then waits for one decode
        step, not for another tenant's rows to finish (they may all end together, many
        steps away)."""
        if company < self.max_batch:
            return []  # a request that must run in small company keeps to it
        present = {item.tenant for item in self.rows.values()} | {item.tenant for item in taken}
        over = len(self.rows) + len(taken) - min(self.max_batch, company)
        admitted: list[tuple[Pending, int]] = []
        while over + len(admitted) < self.headroom:
            try:
                _, arrival, item = self.pending.get_nowait()
            except queue.Empty:
                break
            if item.tenant in present or item.company != company or item.band >= Band.BATCH:
                self._put(item, arrival)  # the queue's first is not a newcomer: none is
                break
            present.add(item.tenant)
            admitted.append((item, arrival))
        return admitted

    def _step(self) -> None:
        """Drop the rows whose job was canceled or timed out, then decode one token."""
        rows = self.rows
        for key, item in list(rows.items()):
            canceled = item.is_canceled()
            if canceled or item.abandoned:
                self.engine.drop(key)
                del rows[key]
                item.future.set_exception(
                    RequestCanceled() if canceled else TimeoutError("past its time limit")
                )
        if not rows:
            return
        self._report_call(len(rows))
        try:
            with self._model_call([]):
                finished = self.engine.step()
        except BaseException as exc:
            live = list(rows.values())
            rows.clear()
            self.engine.clear()
            self._after_failed_call(live, exc)
            return
        for done in finished:
            item = rows.pop(done.key)
            item.future.set_result(CallResult(done.prediction, done.batch_size))
