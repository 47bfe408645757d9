"""Dynamic batching: task threads submit requests, one thread runs them through the model together.

Celery delivers each interactive job on its own and batch lines in chunks (each task
thread waits for its own results); the model calls are shared. Interactive requests are
served before background ones (batch lines) waiting in the same worker.

Two ways to share them, after the backend: with a continuous-batching engine
(`continuous_engine()`), requests join the running batch at the next decode step and leave
it when they finish; without one, a static batch closes when it holds `max_batch` requests
or when the first has waited `wait_ms`, and runs as one `predict` call.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog

from workers.backends.base import (
    DecodeEngine,
    Prediction,
    PredictRequest,
    TokenLogprob,
    VLMBackend,
)

log = structlog.get_logger(__name__)


# Arrivals prefilled together without waiting for more (see `Batcher._joining`).
PREFILL_COMPANY = 4


class RequestCanceled(Exception):
    """The request's job was canceled while it ran: it left the batch unfinished."""


@dataclass(frozen=True)
class BatchResult:
    """A request's prediction, and how many requests shared its model call."""

    prediction: Prediction
    batch_size: int


@dataclass
class Pending:
    """A request waiting for its batch, and where its answer goes."""

    request: PredictRequest
    # The largest model call this request may share (see `company_limit`); it shares calls
    # only with requests of the same limit.
    company: int = 0
    future: Future[BatchResult] = field(default_factory=Future)
    # When it was submitted (monotonic).
    queued_at: float = field(default_factory=time.monotonic)
    # When the request's current model call started (monotonic): its time limit counts from
    # here. None while it waits for a call, first or a retry on its own.
    call_started_at: float | None = None
    # Set whenever a call of this request starts.
    started: threading.Event = field(default_factory=threading.Event)
    # Its caller stopped waiting (time limit): a retry would be wasted work.
    abandoned: bool = False
    # Text already streamed to the client: a retry would send it again.
    streamed: bool = False
    # Batch work: served after every interactive request waiting.
    background: bool = False
    # Whether its job was canceled meanwhile (checked at every decode step).
    canceled: Callable[[], bool] | None = None

    def is_canceled(self) -> bool:
        """Whether the request's job was canceled (never raises: a check that fails says no)."""
        try:
            return self.canceled is not None and self.canceled()
        except Exception:
            return False

    def start_call(self, at: float) -> None:
        """Mark the start of a model call of this request."""
        self.call_started_at = at
        self.started.set()


class Batcher:
    """Collects concurrent requests and runs them through `backend.predict` in batches."""

    def __init__(
        self,
        backend: VLMBackend,
        max_batch: int,
        wait_ms: float,
        on_stuck: Callable[[], None] | None = None,
        on_call: Callable[[int], None] | None = None,
        prefill_wait_ms: float = 0.0,
    ) -> None:
        self.backend = backend
        self.prefill_wait_s = max(0.0, prefill_wait_ms / 1000)
        # Told the size of every model call (the batch-size metric).
        self.on_call = on_call
        # Called when a model call has run for twice a request's time limit: the process
        # cannot serve any more (a torch call cannot be interrupted) and should end.
        self.on_stuck = on_stuck
        self.max_batch = max(1, max_batch)
        self.wait_s = max(0.0, wait_ms / 1000)
        # (priority, arrival, request): interactive first, then first come, first served.
        self.pending: queue.PriorityQueue[tuple[int, int, Pending]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        # Jobs claimed by task threads but not submitted yet: a batch waits for company
        # only when some is on its way, so a lone request never pays `wait_ms`.
        self._incoming = 0
        self._incoming_lock = threading.Lock()
        self._under_load = False
        # When the model call now running started (monotonic), None between calls.
        self._call_started_at: float | None = None
        threading.Thread(target=self._run, name="vlmq-batcher", daemon=True).start()

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a job as on its way to `submit` (claimed, its input loading)."""
        with self._incoming_lock:
            self._incoming += 1
        try:
            yield
        finally:
            with self._incoming_lock:
                self._incoming -= 1

    def submit(self, request: PredictRequest, *, company: int = 0) -> Future[BatchResult]:
        """Queue a request that may share a model call with up to `company` requests in all
        (0: the batcher's own limit); the future resolves with its prediction."""
        return self._enqueue(request, company).future

    def run(
        self,
        request: PredictRequest,
        *,
        company: int,
        time_limit_s: float,
        canceled: Callable[[], bool] | None = None,
    ) -> BatchResult:
        """Submit a request and wait for its prediction.

        The time limit counts from the start of the request's own model call, not the time
        spent queued behind other calls; a TimeoutError past it. If the call ahead of it has
        run for twice the limit, the model is stuck: `on_stuck` is called (the worker ends,
        and its jobs run again elsewhere), or, without one, this request times out.
        `canceled` says whether its job was canceled: RequestCanceled once it left.
        """
        pending = self._enqueue(request, company)
        pending.canceled = canceled
        return self._wait(pending, time_limit_s)

    def run_many(
        self,
        requests: list[PredictRequest],
        *,
        company: int,
        time_limit_s: float,
        background: bool = True,
        canceled: Callable[[], bool] | None = None,
    ) -> list[BatchResult | Exception]:
        """Submit requests together (the lines of a chunk) and wait for every prediction.

        Each request's outcome is its result or the exception it failed with (its own
        TimeoutError past its time limit, RequestCanceled once `canceled` says so), in
        order; one failure fails only that request.
        """
        pendings = [self._enqueue(r, company, background=background) for r in requests]
        for pending in pendings:
            pending.canceled = canceled
        outcomes: list[BatchResult | Exception] = []
        for pending in pendings:
            try:
                outcomes.append(self._wait(pending, time_limit_s))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _wait(self, pending: Pending, time_limit_s: float) -> BatchResult:
        """Wait for a submitted request's prediction (see `run`)."""
        while True:
            started_at = pending.call_started_at
            if started_at is None:  # queued, or waiting for a retry of its own
                if not pending.started.wait(timeout=min(1.0, time_limit_s)):
                    self._check_stuck(pending, time_limit_s)
                continue
            remaining = started_at + time_limit_s - time.monotonic()
            done, _ = wait([pending.future], timeout=max(0.0, min(remaining, 1.0)))
            if done:
                return pending.future.result()
            if remaining <= 0 and pending.call_started_at == started_at:
                pending.abandoned = True
                raise TimeoutError("the request ran past its time limit")

    def _check_stuck(self, pending: Pending, time_limit_s: float) -> None:
        """A TimeoutError (after `on_stuck`) when the call ahead has run for twice the limit."""
        started_at = self._call_started_at
        running_s = time.monotonic() - started_at if started_at is not None else 0.0
        if running_s > 2 * time_limit_s and pending.future.cancel():
            log.error("model_stuck", call_running_s=running_s)
            if self.on_stuck is not None:
                self.on_stuck()
            raise TimeoutError("the model is stuck in an earlier call")

    def _enqueue(
        self, request: PredictRequest, company: int, *, background: bool = False
    ) -> Pending:
        pending = Pending(request, company or self.max_batch, background=background)
        on_text = request.on_text
        if on_text is not None:

            def streaming(text: str, logprobs: list[TokenLogprob]) -> None:
                pending.streamed = True
                on_text(text, logprobs)

            pending.request = dataclasses.replace(request, on_text=streaming)
        self._put(pending)
        return pending

    def _put(self, pending: Pending, arrival: int | None = None) -> None:
        """Queue a request in its place: interactive first, then by arrival."""
        order = next(self._arrivals) if arrival is None else arrival
        self.pending.put((int(pending.background), order, pending))

    def _collect(self) -> list[Pending]:
        """Block for the first request, then gather more until the batch is full or time is up."""
        batch = [self.pending.get()[2]]
        limit = min(self.max_batch, batch[0].company)
        deadline = time.monotonic() + self.wait_s
        while len(batch) < limit:
            if self.pending.empty() and self._incoming == 0 and not self._under_load:
                break  # an idle worker and nobody else coming: run now
            remaining = deadline - time.monotonic()
            try:
                _, arrival, item = (
                    self.pending.get(timeout=remaining)
                    if remaining > 0
                    else self.pending.get_nowait()
                )
            except queue.Empty:
                break
            if item.company != batch[0].company:
                self._put(item, arrival)  # runs with its own kind next, keeping its place
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        # The backend is loaded before anything is submitted: its engine is known once the
        # first request arrives (it goes back in its place).
        _, arrival, first = self.pending.get()
        self._put(first, arrival)
        engine_of = getattr(self.backend, "continuous_engine", None)
        engine: DecodeEngine | None = engine_of() if engine_of is not None else None
        if engine is None:
            while True:
                self._call(self._collect())
        rows: dict[object, Pending] = {}
        while True:
            self._admit(engine, rows)
            self._step(engine, rows)

    def _call(self, batch: list[Pending]) -> None:
        """Run a static batch as one `predict` call."""
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        # Under load (the last call was shared), later requests wait for company even
        # when none is in sight yet: clients answered together come back together.
        self._under_load = len(live) > 1
        self._report_call(len(live))
        try:
            with self._model_call(live):
                predictions = self.backend.predict([item.request for item in live])
        except BaseException as exc:  # every waiter must hear about the failure
            self._after_failed_call(live, exc)
            return
        for item, prediction in zip(live, predictions, strict=True):
            item.future.set_result(BatchResult(prediction, len(live)))

    def _admit(self, engine: DecodeEngine, rows: dict[object, Pending]) -> None:
        """Prefill the requests that may join the batch now (waiting for one while it is
        empty); those the engine does not take (moderation scoring) run as a static call."""
        static: list[Pending] = []
        joining: list[Pending] = []
        for item in self._joining(rows):
            if not engine.accepts(item.request):
                static.append(item)
            elif item.future.set_running_or_notify_cancel():
                joining.append(item)
        if joining:
            try:
                self._prefill(engine, rows, joining)
            except Exception:
                # One input can fail the shared prefill: each runs alone, so only the
                # request that causes the failure fails.
                log.warning("prefill_failed", size=len(joining), retrying=len(joining) > 1)
                for item in joining:
                    try:
                        self._prefill(engine, rows, [item])
                    except Exception as exc:
                        item.future.set_exception(exc)
        if static:
            self._call(static)

    def _prefill(
        self, engine: DecodeEngine, rows: dict[object, Pending], joining: list[Pending]
    ) -> None:
        """Admit requests to the engine: finished ones are answered, the others are rows."""
        with self._model_call(joining):
            finished = engine.admit([(id(item), item.request) for item in joining])
        by_key: dict[object, Pending] = {id(item): item for item in joining}
        for done in finished:
            by_key.pop(done.key).future.set_result(BatchResult(done.prediction, done.batch_size))
        rows.update(by_key)

    def _joining(self, rows: dict[object, Pending]) -> list[Pending]:
        """The waiting requests that fit the batch: the first ones in priority order that
        share its company limit, up to that limit. Blocks while the batch is empty.

        While the batch decodes, a few arrivals wait up to `prefill_wait_ms` for company:
        prompts prefilled together cost much less each than one by one, and the batch
        goes on decoding meanwhile.
        """
        joining = [] if rows else [self.pending.get()[2]]
        company = next(iter(rows.values())).company if rows else joining[0].company
        room = min(self.max_batch, company) - len(rows) - len(joining)
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
        if rows and taken and room > 0 and len(taken) < PREFILL_COMPANY:
            oldest = min(item.queued_at for item, _ in taken)
            if time.monotonic() - oldest < self.prefill_wait_s:
                for item, arrival in taken:
                    self._put(item, arrival)
                return []
        return joining + [item for item, _ in taken]

    def _step(self, engine: DecodeEngine, rows: dict[object, Pending]) -> None:
        """Drop the rows whose job was canceled or timed out, then decode one token."""
        for key, item in list(rows.items()):
            canceled = item.is_canceled()
            if canceled or item.abandoned:
                engine.drop(key)
                del rows[key]
                item.future.set_exception(
                    RequestCanceled() if canceled else TimeoutError("past its time limit")
                )
        if not rows:
            return
        self._report_call(len(rows))
        try:
            with self._model_call([]):
                finished = engine.step()
        except BaseException as exc:
            live = list(rows.values())
            rows.clear()
            engine.clear()
            self._after_failed_call(live, exc)
            return
        for done in finished:
            item = rows.pop(done.key)
            item.future.set_result(BatchResult(done.prediction, done.batch_size))

    @contextmanager
    def _model_call(self, starting: list[Pending]) -> Iterator[None]:
        """Time a model call (the stuck check reads it); `starting` requests' time limits
        count from its start."""
        self._call_started_at = time.monotonic()
        for item in starting:
            item.start_call(self._call_started_at)
        try:
            yield
        finally:
            self._call_started_at = None

    def _report_call(self, size: int) -> None:
        if self.on_call is not None:
            try:
                self.on_call(size)
            except Exception:  # a metric must never stop the model
                log.exception("call_report_failed")

    def _after_failed_call(self, live: list[Pending], exc: BaseException) -> None:
        """One request's input can fail a whole call: retry each member alone, so only the
        request that causes the failure fails. Not retried: a call of one (it already ran
        alone), a member whose caller gave up, one that streamed text already (a retry would
        send it twice), and any failure that is not an ordinary exception."""
        retry = len(live) > 1 and isinstance(exc, Exception)
        log.error("batch_failed", size=len(live), retrying=retry, error=repr(exc))
        if not retry:
            for item in live:
                item.future.set_exception(exc)
            return
        for item in live:
            item.call_started_at = None  # its time limit restarts with its own call
            item.started.clear()
        for item in live:
            if item.abandoned or item.streamed:
                item.future.set_exception(exc)
            else:
                self._predict_alone(item)

    def _predict_alone(self, item: Pending) -> None:
        """Run one request in a call of its own; its future gets the prediction or the error."""
        self._call_started_at = time.monotonic()
        item.start_call(self._call_started_at)
        self._report_call(1)
        try:
            [prediction] = self.backend.predict([item.request])
        except BaseException as exc:
            item.future.set_exception(exc)
            return
        finally:
            self._call_started_at = None
        item.future.set_result(BatchResult(prediction, 1))
