"""The leases of the jobs a worker process holds, renewed while it holds them.

A job is held from its claim until its result is recorded: waiting in the scheduler, as a
single-flight follower, or in the model. A renewal every third of `lease_s` keeps a live
worker's jobs its own however long they take; when the process dies, renewals stop and
the maintenance pass re-enqueues its jobs once their leases lapse.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from services.core.jobs.lifecycle import Claim, renew_leases
from services.core.runtime import Runtime

log = structlog.get_logger(__name__)
RETRY_AFTER_FAILURE_S = 1.0


class LeaseKeeper:
    """Holds this process's claims and renews their leases from a background thread."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @contextmanager
    def holding(self, claims: list[Claim]) -> Iterator[None]:
        """Keep the claims' leases renewed while the block runs."""
        with self._lock:
            self._held.update((claim.job_id, claim) for claim in claims)
        try:
            yield
        finally:
            with self._lock:
                for claim in claims:
                    self._held.pop(claim.job_id, None)

    def held(self) -> list[Claim]:
        """The claims held right now."""
        with self._lock:
            return list(self._held.values())

    def renew_once(self) -> int:
        """Renew every held lease in one statement; returns how many were renewed."""
        claims = self.held()
        if not claims:
            return 0
        with self.runtime.unit_of_work() as session:
            return renew_leases(session, self.runtime.settings, claims)

    def start(self) -> None:
        """Renew every third of the lease, in a daemon thread, until `stop`."""
        threading.Thread(target=self._run, name="vlmq-lease-renewal", daemon=True).start()

    def stop(self) -> None:
        """Stop renewing (the held jobs' leases then lapse)."""
        self._stopping.set()

    def _run(self) -> None:
        interval_s = max(0.2, self.runtime.settings.lease_s / 3)
        wait_s = interval_s
        while not self._stopping.wait(wait_s):
            try:
                self.renew_once()
                wait_s = interval_s
            except Exception:
                # The database may be briefly down: try again soon, well before the leases
                # lapse (the maintenance pass also allows half a lease past the lapse).
                log.exception("lease_renewal_failed")
                wait_s = min(interval_s, RETRY_AFTER_FAILURE_S)
