"""What every fuzz case checks, and the tally of statuses the fuzz tests report at the end."""

from __future__ import annotations

import collections
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from werkzeug.test import TestResponse

from tests.faults.stack import report

ERROR_FIELDS = {"type", "code", "message", "param"}
# The lines of the fuzz batches ask nothing answerable (no messages): each fails alone when
# its batch expands, so a background worker of the suite never spends model time on them.
BATCH_LINE = {
    "custom_id": "c0",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"messages": [], "max_tokens": 2},
}
# `/v1/chat/completions` and `/v1/moderations` wait for a worker, and no worker serves the
# fuzz app's queue: a request that passes every check ends in the 504 `timeout` of a
# synchronous call (the job stays queued). That is the answer to a valid request, not a
# server error, and the only 5xx a fuzz case may get.
SYNC_TIMEOUT = (504, "timeout")


@dataclass
class Tally:
    """The statuses each endpoint answered, the cases that were server errors, and those
    that got another answer than the one expected of them."""

    statuses: dict[str, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    server_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def record(self, endpoint: str, status: int) -> None:
        """Count one answer of `endpoint`."""
        self.statuses[endpoint][status] += 1

    @property
    def cases(self) -> int:
        """How many requests were sent."""
        return sum(sum(counter.values()) for counter in self.statuses.values())

    def all_statuses(self) -> dict[int, int]:
        """How often each status was answered, over every endpoint."""
        total: collections.Counter[int] = collections.Counter()
        for counter in self.statuses.values():
            total.update(counter)
        return dict(sorted(total.items()))

    def per_endpoint(self) -> str:
        """`endpoint=cases` for every endpoint, in one line."""
        return " ".join(
            f"{name}={sum(counter.values())}" for name, counter in sorted(self.statuses.items())
        )


def tally_fixture(name: str, backend: str, **figures: object) -> Iterator[Tally]:
    """A tally for one fuzz module, reported (see `tests.faults.stack.report`) at its end."""
    tally = Tally()
    yield tally
    if tally.unexpected:
        figures["unexpected"] = ", ".join(tally.unexpected)
    report(
        name,
        backend=backend,
        cases=tally.cases,
        server_errors=len(tally.server_errors),
        statuses=tally.all_statuses(),
        **figures,
        per_endpoint=tally.per_endpoint(),
    )


def check_answer(
    tally: Tally,
    endpoint: str,
    response: TestResponse,
    request: object,
    *,
    synchronous: bool = False,
) -> None:
    """Count the answer; fail on a server error, or on a 4xx not in the one error shape.

    `request` describes what was sent, for the failure message (Hypothesis prints the
    drawn inputs too). `synchronous` endpoints may answer a valid request with SYNC_TIMEOUT.
    """
    status = response.status_code
    tally.record(endpoint, status)
    # Only an error's body is read: a 2xx may be an event stream that would wait for a worker.
    has_body = status >= 400 and response.request.method != "HEAD"
    body = response.get_json(silent=True) if has_body else None
    response.close()
    if status >= 500:
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if not (synchronous and (status, code) == SYNC_TIMEOUT):
            tally.server_errors.append(f"{endpoint} {status}")
            raise AssertionError(f"{endpoint} answered {status} {body!r} to {describe(request)}")
    if has_body and status < 500:
        assert_error_shape(body, f"{endpoint} answered {status} to {describe(request)}")


def assert_error_shape(body: Any, context: str) -> None:
    """`body` is `{"error": {"type", "code", "message", "param"}}` with string values."""
    assert isinstance(body, dict) and set(body) == {"error"}, f"{context}: body {body!r}"
    error = body["error"]
    assert isinstance(error, dict) and set(error) == ERROR_FIELDS, f"{context}: {error!r}"
    assert all(isinstance(error[name], str) and error[name] for name in ("type", "code")), context
    assert isinstance(error["message"], str), context
    assert error["param"] is None or isinstance(error["param"], str), context


def describe(request: object, limit: int = 600) -> str:
    """A request's repr, cut to `limit` characters (bodies can be megabytes)."""
    text = repr(request)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def closed_loopback_port() -> int:
    """A loopback port nothing listens on: one the kernel just handed out and took back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def batch_input(lines: int = 1) -> bytes:
    """A well-formed batch input file of `lines` chat requests."""
    return b"".join(
        json.dumps({**BATCH_LINE, "custom_id": f"c{n}"}).encode() + b"\n" for n in range(lines)
    )
