"""What both schedulers share: task threads submit requests and wait for their answers,
one thread runs the model calls.

A task thread runs one interactive job or one chunk of batch lines (each waits for its own
results); the model calls are shared. Requests waiting in the same worker are served by
priority band (`services.core.bands`; see `local_band`), then the tenant with the fewest
requests in this worker first (a tenant sending one job at a time is not queued behind
another's dozens, which the fair queue let in while it was idle), then in order of arrival.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog

from services.core.bands import Band
from workers.backends.base import Prediction, PredictRequest, TokenLogprob, VLMBackend

log = structlog.get_logger(__name__)
# Ranks of one band: band * RANK_SPAN + the tenant's load (capped below the next band).
RANK_SPAN = 1_000_000


def local_band(band: int) -> int:
    """The band a request waits in here. Batch lines wait with default work: the fair queue
    gave them their share of the model when it let them into this worker, and a saturated
    worker always has default work waiting, which would starve them if they came last."""
    return int(Band.DEFAULT) if band == Band.BATCH else int(band)


class RequestCanceled(Exception):
    """The request's job was canceled while it ran: it left the model's batch unfinished."""


@dataclass(frozen=True)
class CallResult:
    """A request's prediction, and how many requests shared its model call."""

    prediction: Prediction
    batch_size: int


@dataclass
class Pending:
    """A request waiting for its model call, and where its answer goes."""

    request: PredictRequest
    # The largest model call this request may share (see `company_limit`); it shares calls
    # only with requests of the same limit.
    company: int = 0
    future: Future[CallResult] = field(default_factory=Future)
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
    # Its priority band: a lower band is served first (batch lines are in the last).
    band: int = Band.DEFAULT
    # Whose it is, and its place in the wait (see `Scheduler._put`).
    tenant: str = ""
    rank: int = 0
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


class Scheduler(ABC):
    """Collects concurrent requests and runs them through the model together.

    A subclass sets its own attributes before calling `__init__`, which starts the thread
    running `_loop` last.
    """

    def __init__(
        self,
        backend: VLMBackend,
        max_batch: int,
        on_stuck: Callable[[], None] | None = None,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.backend = backend
        # Told the size of every model call (the batch-size metric).
        self.on_call = on_call
        # Called when a model call has run for twice a request's time limit: the process
        # cannot serve any more (a torch call cannot be interrupted) and should end.
        self.on_stuck = on_stuck
        self.max_batch = max(1, max_batch)
        # (rank, arrival, request): by band and tenant load (see `_put`), then first come,
        # first served.
        self.pending: queue.PriorityQueue[tuple[int, int, Pending]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        # Each tenant's requests submitted and not answered yet.
        self._load: Counter[str] = Counter()
        self._load_lock = threading.Lock()
        # Jobs claimed by task threads but not submitted yet: a static call waits for
        # company only when some is on its way, so a lone request never pays `wait_ms`.
        self._incoming = 0
        self._incoming_lock = threading.Lock()
        # When the model call now running started (monotonic), None between calls.
        self._call_started_at: float | None = None
        threading.Thread(target=self._loop, name="vlmq-scheduler", daemon=True).start()

    @abstractmethod
    def _loop(self) -> None:
        """Run model calls for the queued requests, forever (the scheduler's thread)."""

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

    def submit(self, request: PredictRequest, *, company: int = 0) -> Future[CallResult]:
        """Queue a request that may share a model call with up to `company` requests in all
        (0: the scheduler's own limit); the future resolves with its prediction."""
        return self._enqueue(request, company).future

    def run(
        self,
        request: PredictRequest,
        *,
        company: int,
        time_limit_s: float,
        band: int = Band.DEFAULT,
        tenant: str = "",
        canceled: Callable[[], bool] | None = None,
    ) -> CallResult:
        """Submit a request and wait for its prediction.

        The time limit counts from the start of the request's own model call, not the time
        spent queued behind other calls; a TimeoutError past it. If the call ahead of it has
        run for twice the limit, the model is stuck: `on_stuck` is called (the worker ends,
        and its jobs run again elsewhere), or, without one, this request times out.
        `canceled` says whether its job was canceled: RequestCanceled once it left.
        """
        pending = self._enqueue(request, company, band=band, tenant=tenant)
        pending.canceled = canceled
        return self._wait(pending, time_limit_s)

    def run_many(
        self,
        requests: list[PredictRequest],
        *,
        company: int,
        time_limit_s: float,
        band: int = Band.BATCH,
        tenant: str = "",
        canceled: Callable[[], bool] | None = None,
    ) -> list[CallResult | Exception]:
        """Submit requests together (the lines of a chunk) and wait for every prediction.

        Each request's outcome is its result or the exception it failed with (its own
        TimeoutError past its time limit, RequestCanceled once `canceled` says so), in
        order; one failure fails only that request.
        """
        pendings = [self._enqueue(r, company, band=band, tenant=tenant) for r in requests]
        for pending in pendings:
            pending.canceled = canceled
        outcomes: list[CallResult | Exception] = []
        for pending in pendings:
            try:
                outcomes.append(self._wait(pending, time_limit_s))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _wait(self, pending: Pending, time_limit_s: float) -> CallResult:
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
        self,
        request: PredictRequest,
        company: int,
        *,
        band: int = Band.DEFAULT,
        tenant: str = "",
    ) -> Pending:
        pending = Pending(request, company or self.max_batch, band=band, tenant=tenant)
        on_text = request.on_text
        if on_text is not None:

            def streaming(text: str, logprobs: list[TokenLogprob]) -> None:
                pending.streamed = True
                on_text(text, logprobs)

            pending.request = dataclasses.replace(request, on_text=streaming)
        self._put(pending)
        return pending

    def _put(self, pending: Pending, arrival: int | None = None) -> None:
        """Queue a request in its place: by band, then by how many requests its tenant had
        in this worker when it arrived, then by arrival. A request put back (`arrival`
        given) keeps the place it had."""
        if arrival is None:
            arrival = next(self._arrivals)
            with self._load_lock:
                load = self._load[pending.tenant]
                self._load[pending.tenant] += 1
            pending.rank = local_band(pending.band) * RANK_SPAN + min(load, RANK_SPAN - 1)
            pending.future.add_done_callback(lambda _: self._unload(pending.tenant))
        self.pending.put((pending.rank, arrival, pending))

    def _unload(self, tenant: str) -> None:
        with self._load_lock:
            self._load[tenant] -= 1
            if self._load[tenant] <= 0:
                del self._load[tenant]

    def _call(self, batch: list[Pending]) -> int:
        """Run requests as one `predict` call; returns how many were still wanted."""
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return 0
        self._report_call(len(live))
        try:
            with self._model_call(live):
                predictions = self.backend.predict([item.request for item in live])
        except BaseException as exc:  # every waiter must hear about the failure
            self._after_failed_call(live, exc)
            return len(live)
        for item, prediction in zip(live, predictions, strict=True):
            item.future.set_result(CallResult(prediction, len(live)))
        return len(live)

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
        log.error("model_call_failed", size=len(live), retrying=retry, error=repr(exc))
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
        item.future.set_result(CallResult(prediction, 1))
