"""Static batching: a call closes when it holds `max_batch` requests or when its first
request has waited `wait_ms`, and runs as one `predict` call."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from workers.backends.base import VLMBackend
from workers.schedulers.base import Pending, Scheduler


class StaticScheduler(Scheduler):
    """Runs waiting requests through `backend.predict` in calls of up to `max_batch`."""

    def __init__(
        self,
        backend: VLMBackend,
        max_batch: int,
        wait_ms: float,
        on_stuck: Callable[[], None] | None = None,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.wait_s = max(0.0, wait_ms / 1000)
        # Under load (the last call was shared), later requests wait for company even
        # when none is in sight yet: clients answered together come back together.
        self._under_load = False
        super().__init__(backend, max_batch, on_stuck=on_stuck, on_call=on_call)

    def _loop(self) -> None:
        while True:
            size = self._call(self._collect())
            if size:
                self._under_load = size > 1

    def _collect(self) -> list[Pending]:
        """Block for the first request, then gather more until the call is full or time is up."""
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
