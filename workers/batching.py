"""Dynamic batching: task threads submit requests, one thread runs them through the model together.

Celery still delivers and acknowledges each job on its own (each task thread waits for its
own result); only the model call is shared. A batch closes when it holds `max_batch`
requests or when the first request has waited `wait_ms`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

from workers.backends.base import Prediction, PredictRequest, VLMBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    """A request's prediction, and how many requests shared its model call."""

    prediction: Prediction
    batch_size: int


@dataclass
class Pending:
    """A request waiting for its batch, and where its answer goes."""

    request: PredictRequest
    # A job on its second attempt or later runs alone: if it is what killed the worker,
    # it must not take other jobs down with it again.
    isolated: bool = False
    future: Future[BatchResult] = field(default_factory=Future)


class Batcher:
    """Collects concurrent requests and runs them through `backend.predict` in batches."""

    def __init__(self, backend: VLMBackend, max_batch: int, wait_ms: float) -> None:
        self.backend = backend
        self.max_batch = max(1, max_batch)
        self.wait_s = max(0.0, wait_ms / 1000)
        self.pending: queue.Queue[Pending] = queue.Queue()
        # Jobs claimed by task threads but not submitted yet: a batch waits for company
        # only when some is on its way, so a lone request never pays `wait_ms`.
        self._incoming = 0
        self._incoming_lock = threading.Lock()
        self._under_load = False
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

    def submit(self, request: PredictRequest, *, isolated: bool = False) -> Future[BatchResult]:
        """Queue a request; the future resolves with its prediction."""
        pending = Pending(request, isolated)
        self.pending.put(pending)
        return pending.future

    def _collect(self) -> list[Pending]:
        """Block for the first request, then gather more until the batch is full or time is up."""
        batch = [self.pending.get()]
        if batch[0].isolated:
            return batch
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            if self.pending.empty() and self._incoming == 0 and not self._under_load:
                break  # an idle worker and nobody else coming: run now
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self.pending.get(timeout=remaining)
                    if remaining > 0
                    else self.pending.get_nowait()
                )
            except queue.Empty:
                break
            if item.isolated:
                self.pending.put(item)  # runs in a batch of its own next
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._collect()
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if not live:
                continue
            # Under load (the last call was shared), later requests wait for company even
            # when none is in sight yet: clients answered together come back together.
            self._under_load = len(live) > 1
            try:
                predictions = self.backend.predict([item.request for item in live])
            except BaseException as exc:  # every waiter must hear about the failure
                log.exception("event=batch_failed size=%d", len(live))
                for item in live:
                    item.future.set_exception(exc)
                continue
            for item, prediction in zip(live, predictions, strict=True):
                item.future.set_result(BatchResult(prediction, len(live)))
