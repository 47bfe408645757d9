"""What every worker process sets up to be seen: vlmq's log format (for Celery's lines too,
in the background worker), and, when `VLMQ_METRICS_PORT` is set, an endpoint serving this
host's metrics."""

from __future__ import annotations

from typing import Any

import structlog
from celery.signals import setup_logging, worker_ready
from prometheus_client import start_http_server

from services.core.config import Settings
from services.core.logs import configure_logging
from services.core.metrics import scrape_registry

log = structlog.get_logger(__name__)


def use_vlmq_logging(settings: Settings) -> None:
    """Have Celery leave logging to vlmq: with a `setup_logging` receiver connected, Celery
    configures no handler of its own, and its lines go through vlmq's format."""

    def configure(**_: Any) -> None:
        configure_logging(settings)

    setup_logging.connect(configure, weak=False)
    worker_ready.connect(log_worker_ready, weak=False)
    configure_logging(settings)


def celery_banner_args(_settings: Settings) -> list[str]:
    """`celery` options that go before `worker`: no start-up banner (plain text over many
    lines); `log_worker_ready` writes what it said as one line in vlmq's format."""
    return ["--quiet"]


def log_worker_ready(sender: Any = None, **_: Any) -> None:
    """One line when a worker starts consuming: its name, queues, threads and task events."""
    consumer = sender
    queues = sorted(queue.name for queue in consumer.task_consumer.queues) if consumer else []
    log.info(
        "worker_ready",
        hostname=getattr(consumer, "hostname", None),
        queues=",".join(queues),
        concurrency=getattr(getattr(consumer, "pool", None), "limit", None),
        task_events=bool(consumer and consumer.app.conf.worker_send_task_events),
    )


def serve_metrics(settings: Settings) -> None:
    """Serve `/metrics` of this host's processes on `metrics_port`, if one is set (for a
    Prometheus that scrapes each worker host; see `services.core.metrics`)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=scrape_registry())
