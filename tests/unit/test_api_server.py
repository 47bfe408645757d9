"""The API's server: whole requests before threads, read deadlines, refusals in JSON."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.api.server import check_threads, create_server, listening_socket
from services.core.config import Settings
from services.core.waiting import WaitingSlots

HELLO = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A stand-in application: reads the body, answers `hello`."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture()
def port() -> Iterator[int]:
    """A server of one thread, with short deadlines and a 1 KiB body limit."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        header_timeout_s=1,
        body_timeout_s=2,
        max_body_bytes=1024,
        api_threads=1,
    )
    sock = listening_socket("127.0.0.1", 0)
    server = create_server(hello_app, settings, sock=sock)
    threading.Thread(target=server.run, daemon=True).start()
    yield int(sock.getsockname()[1])
    server.task_dispatcher.shutdown(timeout=2)
    server.close()


def connect(port: int, sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(sent)
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_half_sent_requests_hold_no_thread(port: int) -> None:
    # The one thread is never given to the connections still sending their requests.
    stalled = [connect(port, b"GET / HTTP/1.1\r\nHost: 12") for _ in range(20)]
    stalled += [
        connect(port, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nab") for _ in range(20)
    ]
    whole = connect(port, HELLO.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert answer(whole).endswith(b"hello")
    for sock in stalled:
        sock.close()


def test_headers_and_body_must_arrive_within_their_deadlines(port: int) -> None:
    in_headers = connect(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    in_body = connect(port, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
    started = time.monotonic()
    # A client trickling its headers a byte at a time is closed all the same.
    for _ in range(3):
        time.sleep(0.4)
        in_headers.sendall(b"X")
    assert answer(in_headers) == b""
    assert 1 <= time.monotonic() - started < 4
    assert answer(in_body) == b""
    assert 2 <= time.monotonic() - started < 5


def test_a_slow_request_that_arrives_in_time_is_answered(port: int) -> None:
    sock = connect(port)
    for byte in HELLO.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"):
        sock.sendall(bytes([byte]))
        time.sleep(0.01)
    assert answer(sock).endswith(b"hello")


def test_what_the_server_refuses_is_in_the_json_error_shape(port: int) -> None:
    sock = connect(port, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n\r\n")
    head, _, body = answer(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"Content-Type: application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and error["type"] == "invalid_request_error"


def test_one_tenants_held_open_calls_cannot_take_every_thread() -> None:
    def settings(threads: int) -> Settings:
        return Settings(_env_file=None, tenant_max_waiting=32, api_threads=threads)  # type: ignore[call-arg]

    check_threads(settings(40))
    with pytest.raises(ValueError, match="VLMQ_TENANT_MAX_WAITING"):
        check_threads(settings(39))


def test_tenants_together_leave_threads_to_short_calls() -> None:
    slots = WaitingSlots()
    # Two tenants under their own cap of 3 fill the process's 4 waiting threads...
    assert [slots.take(tenant, 3, 4) for tenant in "aaab"] == [None] * 4
    # ...past which anyone is refused, naming the setting; a slot given back is free again.
    assert slots.take("c", 3, 4) == "VLMQ_API_THREADS"
    assert slots.take("a", 3, 4) == "VLMQ_TENANT_MAX_WAITING"
    slots.give_back("b")
    assert slots.take("c", 3, 4) is None
