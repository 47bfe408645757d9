"""Unit tests stand alone: no Redis, no database server, no worker.

A unit test that connects to one fails at once, rather than passing only on a machine where
the service happens to be up (`make test-quick` runs with none).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL

SERVICE_PORTS = {
    6379,
    5432,
    urlsplit(REDIS_URL).port or 6379,
    urlsplit(POSTGRES_URL).port or 5432,
}


def refuse_service(address: Any) -> None:
    """Fail the test if `address` is a TCP address on a service port."""
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in SERVICE_PORTS:
        pytest.fail(f"a unit test connected to {address[0]}:{address[1]} (Redis or PostgreSQL)")


@pytest.fixture(autouse=True)
def no_service_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse connections to Redis and PostgreSQL for the length of each unit test."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded_connect(self: socket.socket, address: Any) -> None:
        refuse_service(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        refuse_service(address)
        return connect_ex(self, address)

    def refused_database(*_: object, **__: object) -> psycopg.Connection[Any]:
        pytest.fail("a unit test connected to PostgreSQL")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    # libpq opens its own sockets, out of reach of the socket module.
    monkeypatch.setattr(psycopg, "connect", refused_database)
    monkeypatch.setattr(psycopg.Connection, "connect", refused_database)
    yield
