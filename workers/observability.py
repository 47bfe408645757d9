"""What every worker process sets up to be seen: vlmq's log format for Celery's lines too,
and, when `VLMQ_METRICS_PORT` is set, an endpoint serving this host's metrics."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging
from prometheus_client import start_http_server

from services.core.config import Settings
from services.core.logs import configure_logging
from services.core.metrics import scrape_registry


def use_vlmq_logging(settings: Settings) -> None:
    """Have Celery leave logging to vlmq: with a `setup_logging` receiver connected, Celery
    configures no handler of its own, and its lines go through vlmq's format."""

    def configure(**_: Any) -> None:
        configure_logging(settings)

    setup_logging.connect(configure, weak=False)
    configure_logging(settings)


def celery_banner_args(settings: Settings) -> list[str]:
    """`celery` options that go before `worker`: no start-up banner when every line must be
    JSON (the banner is plain text)."""
    return ["--quiet"] if settings.log_format == "json" else []


def serve_metrics(settings: Settings) -> None:
    """Serve `/metrics` of this host's processes on `metrics_port`, if one is set (for a
    Prometheus that scrapes each worker host; see `services.core.metrics`)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=scrape_registry())
