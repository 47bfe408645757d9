"""Gauges that describe the deployment rather than a process, read when `/metrics` is
scraped: jobs queued and running per model and priority, each tenant's queued tokens, and
live workers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable

import redis
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import Session, sessionmaker

from services.core.fair_queue import FairQueue
from services.core.heartbeats import live_background_workers, live_model_workers
from services.core.tables import Job, JobStatus


class DeploymentCollector:
    """Gauges read at scrape time: jobs queued and running, and live workers.

    One grouped count over the status index per scrape (remembered for `ttl_s`, so many
    scrapers cost one query), and one sorted-set count per kind of worker.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        model: str,
        ttl_s: float = 2.0,
        *,
        fair: FairQueue | None = None,
    ) -> None:
        self.sessions = sessions
        self.redis = client
        self.model = model
        self.fair = fair
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._read_at = 0.0
        self._families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        """The deployment's gauges (nothing when the database or Redis cannot answer)."""
        with self._lock:
            if time.monotonic() - self._read_at > self.ttl_s:
                self._families = self._read()
                self._read_at = time.monotonic()
            return list(self._families)

    def _read(self) -> list[Metric]:
        families: list[Metric] = []
        with contextlib.suppress(Exception):  # a scrape must not fail with a dependency
            families.extend(self._job_counts())
        with contextlib.suppress(Exception):
            models = GaugeMetricFamily(
                "vlmq_workers_live", "Model workers with a live heartbeat.", labels=["model"]
            )
            models.add_metric([self.model], len(live_model_workers(self.redis, self.model)))
            background = GaugeMetricFamily(
                "vlmq_background_workers_live", "Background workers with a live heartbeat."
            )
            background.add_metric([], len(live_background_workers(self.redis)))
            families.extend([models, background])
        with contextlib.suppress(Exception):
            families.extend(self._tenant_backlog())
        return families

    def _tenant_backlog(self) -> list[Metric]:
        """Each tenant's queued tokens for the model (the fair queue's count)."""
        if self.fair is None:
            return []
        family = GaugeMetricFamily(
            "vlmq_tenant_queued_tokens",
            "Tokens (prompt plus max_tokens) of each tenant's jobs waiting for the model; the "
            "tenant label is a hash of its id unless VLMQ_METRICS_TENANT_IDS is on.",
            labels=["model", "tenant"],
        )
        for tenant, tokens in sorted(self.fair.tenant_tokens().items()):
            family.add_metric([self.model, tenant], tokens)
        return [family]

    def _job_counts(self) -> list[Metric]:
        background = Job.batch_id.is_not(None)
        statuses = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        with self.sessions() as session:
            rows = session.execute(
                sa.select(Job.model, Job.status, background, sa.func.count())
                .where(Job.status.in_(statuses))
                .group_by(Job.model, Job.status, background)
            ).all()
        gauges = {
            status: GaugeMetricFamily(
                f"vlmq_jobs_{status}",
                f"Jobs {status} now, per model and priority (interactive or background).",
                labels=["model", "priority"],
            )
            for status in statuses
        }
        counts = {
            (model, status, priority): 0
            for model in {self.model, *(row[0] for row in rows)}
            for status in statuses
            for priority in ("interactive", "background")
        }
        for model, status, is_background, count in rows:
            counts[(model, status, "background" if is_background else "interactive")] += count
        for (model, status, priority), count in sorted(counts.items()):
            gauges[status].add_metric([model, priority], count)
        return list(gauges.values())
