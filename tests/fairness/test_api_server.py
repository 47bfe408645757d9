"""The API server shared fairly: one tenant's held-open streams and a crowd of clients that
never finish sending their requests leave another tenant's calls as fast as alone.

A real `vlmq api` process (the production server, services.api.server) on SQLite and a
Redis database of its own. No model worker runs while the API is measured: the streams
stay open on jobs that stay queued, and the quiet tenant's job is answered from the answer
cache (filled by a real worker beforehand), so what is timed is the API alone.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from services.core.config import Settings
from services.core.migrate import upgrade
from tests.conftest import redis_db_url
from tests.faults.stack import report
from tests.support import (
    ApiProcess,
    WorkerProcess,
    data_url,
    free_port,
    make_settings,
    shape_png,
    wait_until,
)
from vlmq.cli import create_key

HELD_STREAMS = 48
HALF_SENT = 150
SAMPLES = 25
THREADS = 48
JOB = {"image": data_url(shape_png("red")), "question": "what color is the shape?"}


@dataclass
class Served:
    settings: Settings
    port: int
    flooder: dict[str, str]
    quiet: dict[str, str]


def call(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    """One request on a new connection; its status and JSON body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        sent = {**headers, "Content-Type": "application/json"} if body is not None else headers
        connection.request(method, path, body=payload, headers=sent)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("api-server")
    database_url = f"sqlite:///{tmp / 'vlmq.db'}"
    upgrade(database_url)
    redis_url = redis_db_url("api_server")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    port = free_port()
    settings = make_settings(
        tmp,
        database_url,
        redis_url,
        tiny_model_dir,
        host="127.0.0.1",
        port=port,
        api_threads=THREADS,
        sync_timeout_s=300,
    )
    flooder = {"Authorization": f"Bearer {create_key(settings, 'flooder', 'server')}"}
    quiet = {"Authorization": f"Bearer {create_key(settings, 'quiet', 'server')}"}
    api = ApiProcess(settings, tmp / "api.log", "--workers", "1")
    try:
        wait_until(lambda: healthy(port), 60, f"the API up (log: {tmp / 'api.log'})", 0.2)
        # The quiet tenant's answer, cached by a real worker, which then stops.
        worker = WorkerProcess(settings, tmp / "worker.log")
        try:
            worker.wait_ready(client)
            status, job = call(port, "POST", "/v1/jobs", {**quiet, "Prefer": "wait=60"}, JOB)
            assert status == 202 and job["status"] == "succeeded", job
        finally:
            worker.stop()
        yield Served(settings, port, flooder, quiet)
    finally:
        api.stop()
        client.flushdb()


def healthy(port: int) -> bool:
    try:
        return call(port, "GET", "/healthz", {})[0] == 200
    except OSError:
        return False


def quiet_job_latency(served: Served) -> float:
    """The median time of the quiet tenant's job, answered from the cache in the call."""
    times = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        status, job = call(
            served.port, "POST", "/v1/jobs", {**served.quiet, "Prefer": "wait=30"}, JOB
        )
        times.append(time.perf_counter() - started)
        assert status == 202 and job["status"] == "succeeded", job
    return statistics.median(times)


def open_stream(served: Served) -> socket.socket:
    """A chat stream of the flooding tenant, sent whole and then never read."""
    body = json.dumps(
        {
            "model": served.settings.served_model_name,
            "messages": [{"role": "user", "content": "hello?"}],
            "max_tokens": 2,
            "temperature": 1.0,
            "stream": True,
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {served.flooder['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.sendall(head.encode() + body)
    return sock


def open_half_sent(port: int, index: int) -> socket.socket:
    """A request without a key that stops partway: in its headers, or in its body."""
    sock = socket.create_connection(("127.0.0.1", port))
    if index % 2:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
    else:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"question": "'
        )
    return sock


def refused(sock: socket.socket) -> bool:
    """Whether the server answered this stream at once with `429`."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(64, socket.MSG_PEEK).startswith(b"HTTP/1.1 429")


def test_held_open_streams_and_half_sent_requests_leave_another_tenant_as_fast(
    served: Served,
) -> None:
    alone_s = quiet_job_latency(served)
    held: list[socket.socket] = []
    try:
        held += [open_stream(served) for _ in range(HELD_STREAMS)]
        streams = list(held)
        held += [open_half_sent(served.port, index) for index in range(HALF_SENT)]
        cap = served.settings.tenant_max_waiting

        def capped() -> bool:
            status, listed = call(served.port, "GET", "/v1/jobs?limit=100", served.flooder)
            return status == 200 and len(listed["data"]) == cap

        wait_until(capped, 30, f"{cap} streams held open, their jobs queued")
        # Past its cap the tenant is refused at once; the rest of its streams stay open.
        wait_until(
            lambda: sum(refused(sock) for sock in streams) == HELD_STREAMS - cap,
            30,
            "the streams over the cap refused",
        )
        loaded_s = quiet_job_latency(served)
        health_status, _ = call(served.port, "GET", "/healthz", {})
    finally:
        for sock in held:
            sock.close()
    report(
        f"api server: quiet tenant's job p50 {alone_s * 1000:.1f} ms alone, "
        f"{loaded_s * 1000:.1f} ms beside {HELD_STREAMS} held-open streams and "
        f"{HALF_SENT} half-sent requests ({loaded_s / alone_s:.2f}x)"
    )
    assert health_status == 200
    assert loaded_s <= 2 * alone_s
