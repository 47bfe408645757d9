"""The API's HTTP server: waitress, with a deadline on reading each request.

`vlmq up` serves the API from one process and `vlmq api` from several sharing one
listening socket; both serve through `create_server`. waitress reads every request,
headers and body, on its event loop and hands it to a thread only once it is whole, so a
client that sends its request slowly (or never finishes it) holds a connection, not one of
the threads that answer requests. Connections are bounded too: a request must send its
headers within `header_timeout_s` and its body within `body_timeout_s` of its first byte,
a kept-alive connection closes after `idle_timeout_s` of silence, and the server holds at
most `max_connections` at once.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from services.core.config import Settings
from services.core.responses.errors import ErrorResponse
from services.core.waiting import SHORT_CALL_THREADS

log = logging.getLogger(__name__)

# File descriptors kept free beyond the connections (database, Redis, files, the model's
# tokenizer): the connection cap is lowered to leave them when the process limit is low.
RESERVED_DESCRIPTORS = 256
# How often the server looks for connections past their deadlines.
SWEEP_INTERVAL_S = 1


# What the server itself refuses, before the application sees the request.
SERVER_ERROR_CODES = {
    400: "invalid_request",
    413: "payload_too_large",
    431: "headers_too_large",
}


class JsonErrorTask(ErrorTask):  # type: ignore[misc]  # waitress ships no type hints
    """A request the server refuses (malformed, too large) answered in the one JSON error
    shape, as the application answers its own refusals."""

    def execute(self) -> None:
        """Write the refusal as `{"error": {...}}`, closing the connection after it."""
        error = self.request.error
        code = SERVER_ERROR_CODES.get(error.code, "http_error")
        kind = "server_error" if error.code >= 500 else "invalid_request_error"
        body = ErrorResponse.build(kind, code, f"{error.reason}: {error.body}")
        payload = json.dumps(body.dump()).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(payload)
        self.write(payload)


class DeadlineChannel(HTTPChannel):  # type: ignore[misc]
    """A connection that notes when the request it is reading began."""

    error_task_class = JsonErrorTask

    # When the first byte of the request being read arrived (None: none is being read).
    request_began: float | None = None

    def received(self, data: bytes) -> bool:
        """Read `data` into requests, keeping the start of any request still incomplete."""
        began = self.request_began if self.request is not None else time.monotonic()
        accepted: bool = super().received(data)
        self.request_began = began if self.request is not None else None
        return accepted

    def overdue(self, now: float, header_timeout_s: float, body_timeout_s: float) -> bool:
        """Whether the request being read missed its deadline (headers, then the body)."""
        if self.request_began is None or self.request is None:
            return False
        limit = body_timeout_s if self.request.headers_finished else header_timeout_s
        return now - self.request_began > limit


class DeadlineServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server, closing connections whose request arrives too slowly."""

    channel_class = DeadlineChannel
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0

    def maintenance(self, now: float) -> None:
        """Close idle connections (waitress's own sweep) and those past a read deadline."""
        super().maintenance(now)
        monotonic = time.monotonic()
        for channel in list(self.active_channels.values()):
            if channel.overdue(monotonic, self.header_timeout_s, self.body_timeout_s):
                log.info("request_read_timeout", extra={"client": channel.addr})
                channel.will_close = True


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on `host:port`, inheritable by the API processes that
    `vlmq api` starts (they accept from it in turn)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def connection_cap(settings: Settings) -> int:
    """The connections one API process holds at most: `max_connections`, raising the
    process's descriptor limit as far as allowed, and lowered to fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    return max(1, min(settings.max_connections, soft - RESERVED_DESCRIPTORS))


def create_server(
    app: Any, settings: Settings, sock: socket.socket | None = None
) -> DeadlineServer:
    """The server for `app`: on `sock` (one already listening) or on the configured host and
    port, answering with `api_threads` threads."""
    threads = settings.api_threads
    if sock is None:
        sock = listening_socket(settings.host, settings.port)
    options: dict[str, Any] = {
        "threads": threads,
        "connection_limit": connection_cap(settings),
        "channel_timeout": max(1, round(settings.idle_timeout_s)),
        "cleanup_interval": SWEEP_INTERVAL_S,
        # poll(), not select(): select() cannot watch descriptors past 1024.
        "asyncore_use_poll": True,
        "max_request_body_size": settings.max_body_bytes,
        "ident": "vlmq",
    }
    if settings.trusted_proxy:
        options |= {
            "trusted_proxy": settings.trusted_proxy,
            "trusted_proxy_count": 1,
            "trusted_proxy_headers": {"x-forwarded-for"},
            "clear_untrusted_proxy_headers": True,
        }
    adjustments = Adjustments(sockets=[sock], **options)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    server = DeadlineServer(
        app,
        map={},
        _sock=sock,
        dispatcher=dispatcher,
        adj=adjustments,
        bind_socket=False,
        sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
    )
    server.header_timeout_s = settings.header_timeout_s
    server.body_timeout_s = settings.body_timeout_s
    return server


def check_threads(settings: Settings) -> None:
    """Refuse a server whose threads one tenant's held-open calls could all take."""
    cap, threads = settings.tenant_max_waiting, settings.api_threads
    if threads <= SHORT_CALL_THREADS:
        raise ValueError(f"VLMQ_API_THREADS ({threads}) must be over {SHORT_CALL_THREADS}")
    if cap and cap > threads - SHORT_CALL_THREADS:
        raise ValueError(
            f"VLMQ_TENANT_MAX_WAITING ({cap}) must leave {SHORT_CALL_THREADS} of the API's "
            f"{threads} threads (VLMQ_API_THREADS) to short calls"
        )
