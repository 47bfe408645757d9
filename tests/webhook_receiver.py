"""Webhook test helpers: a real HTTP receiver on loopback, and the `vlmq background-worker` process.

The receiver records every request and answers from a script per path (status, delay,
redirect), so tests can make a real webhook worker retry, time out, or be redirected.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis

from services.core.config import Settings
from services.core.heartbeats import live_background_workers
from tests.support import VlmqProcess, wait_until

# The webhook worker of the tests retries quickly: 4 attempts within about 2 seconds.
TEST_RETRY_SCHEDULE_S = "0.3,0.6,1.2"
TEST_WEBHOOK_TIMEOUT_S = "1"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status after an optional delay, optionally a redirect."""

    status: int = 200
    delay_s: float = 0.0
    location: str | None = None


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the receiver saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


class WebhookReceiver:
    """An http.server in a thread on 127.0.0.1: records requests, answers scripted replies.

    Each path answers its script in order, then 200 for ever after.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = defaultdict(list)
        self._received: list[ReceivedRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                receiver._handle(self)

            def log_message(self, *_: object) -> None:
                """Quiet: the test output is about the test."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self._received.append(
                ReceivedRequest(
                    handler.command,
                    handler.path,
                    {k.lower(): v for k, v in handler.headers.items()},
                    body,
                    time.monotonic(),
                )
            )
            script = self._scripts[handler.path]
            reply = script.pop(0) if script else Reply()
        time.sleep(reply.delay_s)
        with contextlib.suppress(OSError):  # the client may have given up (a timeout test)
            handler.send_response(reply.status)
            if reply.location:
                handler.send_header("Location", reply.location)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.server.server_port}"

    def url(self, path: str) -> str:
        """The full URL of a path on this receiver."""
        return self.base_url + path

    def script(self, path: str, *replies: Reply | int) -> None:
        """Answer the next requests to `path` with these replies (ints are statuses)."""
        with self._lock:
            self._scripts[path].extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def requests(self, path: str) -> list[ReceivedRequest]:
        """The requests received on `path`, in order."""
        with self._lock:
            return [r for r in self._received if r.path == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 30) -> list[ReceivedRequest]:
        """Block until `path` has received at least `count` requests; returns them."""
        wait_until(
            lambda: len(self.requests(path)) >= count,
            timeout_s,
            f"{count} request(s) on {path}",
        )
        return self.requests(path)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


class BackgroundWorkerProcess(VlmqProcess):
    """A real `vlmq background-worker` process with the tests' short retry schedule."""

    command = "background-worker"

    def __init__(self, settings: Settings, log_path: Path) -> None:
        super().__init__(
            settings,
            log_path,
            VLMQ_WEBHOOK_RETRY_SCHEDULE_S=TEST_RETRY_SCHEDULE_S,
            VLMQ_WEBHOOK_TIMEOUT_S=TEST_WEBHOOK_TIMEOUT_S,
            # The suite fails deliveries to one receiver on purpose, test after test: a
            # breaker would pause it for the tests that follow (unit-tested on its own).
            VLMQ_WEBHOOK_BREAKER_FAILURES="0",
        )

    def wait_ready(self, client: redis.Redis, timeout_s: float = 60) -> BackgroundWorkerProcess:
        """Block until the worker's heartbeat appears."""
        suffix = f":{self.process.pid}"
        wait_until(
            lambda: any(name.endswith(suffix) for name in live_background_workers(client)),
            timeout_s,
            f"webhook worker ready (log: {self.log_path})",
            interval_s=0.1,
        )
        return self
