"""One log format for every vlmq process (API, workers, background worker, `vlmq up`).

structlog renders every line, vlmq's own and those of the libraries that log through the
standard library (Celery, waitress, SQLAlchemy), as `key=value` pairs (`VLMQ_LOG_FORMAT=text`,
the default: no colour codes, greppable) or as one JSON object per line (`json`). The request
id bound by the API (`x-request-id`) is stored with the job, and the worker and the webhook
delivery bind it again, so one id finds a job's lines in every process.

Never logged: keys, secrets, request bodies, image bytes. As a guard, any string value longer
than `MAX_VALUE_CHARS` is cut (a traceback is kept whole).
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from services.core.config import Settings

MAX_VALUE_CHARS = 2000
# What a client's `x-request-id` may hold; anything else is replaced by an id of ours.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Libraries whose INFO lines are noise in a service log.
QUIET_LOGGERS = ("werkzeug", "urllib3", "httpx", "kombu")


def cut_long_values(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """Cut long string values (see `MAX_VALUE_CHARS`); tracebacks stay whole."""
    for key, value in event.items():
        if key != "exception" and isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            event[key] = value[:MAX_VALUE_CHARS] + f"…(+{len(value) - MAX_VALUE_CHARS} chars)"
    return event


def renderer(log_format: str) -> Any:
    """The last processor: a JSON object, or `key=value` pairs with the time and event first."""
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.processors.LogfmtRenderer(
        key_order=["timestamp", "level", "logger", "event"], drop_missing=True, bool_as_flag=False
    )


def configure_logging(settings: Settings) -> None:
    """Send every log record of this process through structlog to stderr (idempotent)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            cut_long_values,
            renderer(settings.log_format),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level.upper())
    # Library warnings (torch, transformers) become log lines too, in the same format.
    logging.captureWarnings(True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def new_request_id() -> str:
    """A fresh request id."""
    return "req_" + secrets.token_hex(12)


def accepted_request_id(sent: str | None) -> str:
    """The client's `x-request-id` if it is a sane id, else a fresh one."""
    if sent and REQUEST_ID_PATTERN.match(sent):
        return sent
    return new_request_id()


def current_request_id() -> str | None:
    """The request id bound to this thread's log context, if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value else None


def annotate(**values: Any) -> None:
    """Add `values` to this thread's log context until it is cleared (the API clears it at
    the end of each request, so the request's access line carries them)."""
    structlog.contextvars.bind_contextvars(**values)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Add `values` (those not None) to every log line of this thread while inside."""
    present = {key: value for key, value in values.items() if value is not None}
    with structlog.contextvars.bound_contextvars(**present):
        yield
