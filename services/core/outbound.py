"""Outbound HTTP that never reaches private addresses unless the operator allows them.

Every request resolves the host itself, checks each address, and dials the checked IP
directly (the TLS name stays the host's), so DNS cannot change the answer between check
and connect. Redirects are followed by hand and checked the same way.

One deadline covers the whole fetch: resolving, connecting, every redirect and the body.
A server that drips its answer a byte at a time is cut off when the deadline passes.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from services.core.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TooManyRequestsError,
    VlmqError,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Carrier-grade NAT and the cloud metadata ranges are not all in `is_private`.
EXTRA_BLOCKED = [
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fd00:ec2::/32"),
]
MAX_REDIRECTS = 3
READ_CHUNK_BYTES = 64 * 1024
# `getaddrinfo` has no timeout of its own: each lookup runs in a thread of its own, and the
# fetch waits for it until the fetch's deadline, then goes on without it. A lookup that
# hangs on holds its thread, and counts against its owner (see `fetching_for`) until it
# returns: an owner holds at most `MAX_LOOKUPS_PER_OWNER`, all owners `MAX_LOOKUPS`. A
# tenant whose hosts never answer then fills its own share, not everyone's.
MAX_LOOKUPS = 32
MAX_LOOKUPS_PER_OWNER = 4
# Whose outbound requests are being made (a tenant id; None: no tenant).
FETCHING_FOR: ContextVar[str | None] = ContextVar("vlmq_fetching_for", default=None)
# The well-known NAT64 prefix: 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefusedError(InvalidRequestError):
    """The URL points at an address vlmq may not reach."""

    code = "outbound_address_refused"


class FetchError(VlmqError):
    """The remote server could not be reached or answered with an error."""

    status = 400
    type = "invalid_request_error"
    code = "fetch_failed"


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it is one of the forms that reach it:
    IPv4-mapped (`::ffff:a.b.c.d`), 6to4 (`2002:AABB:CCDD::/16`), Teredo (`2001::/32`, the
    client address inverted) and NAT64 (`64:ff9b::a.b.c.d`)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_blocked_address(address: IPAddress) -> bool:
    """True for private, loopback, link-local, CGNAT, metadata, multicast and reserved
    addresses, and for IPv6 forms that embed one (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            if is_blocked_address(embedded):
                return True
            if address.teredo is None:
                return False  # mapped, 6to4 or NAT64: reaches the public address it embeds
            # Teredo (2001::/32) is not global whatever client it names: checked below.
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or any(address in network for network in EXTRA_BLOCKED)
    )


def is_allowed(host: str, address: IPAddress, allowlist: list[str]) -> bool:
    """Whether the operator's allow-list names this host or contains this address."""
    for entry in allowlist:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


@contextmanager
def fetching_for(tenant_id: str) -> Iterator[None]:
    """Count the outbound requests made in the block (their lookups, their fetch slots)
    against `tenant_id`."""
    token = FETCHING_FOR.set(tenant_id)
    try:
        yield
    finally:
        FETCHING_FOR.reset(token)


class OwnerSlots:
    """Slots of a shared outbound resource: at most `per_owner` held by one owner (a
    tenant, see `fetching_for`), `total` in all. Over its share, an owner is refused for
    itself (`429 fetch_quota_exceeded`, with `advice`); only when several owners fill every
    slot is a request refused for capacity (`503 fetch_capacity_exceeded`)."""

    def __init__(self, total: int, per_owner: int, what: str, advice: str) -> None:
        self.total = max(1, total)
        self.per_owner = max(1, per_owner)
        self.what, self.advice = what, advice
        self.running: Counter[str | None] = Counter()
        self.lock = threading.Lock()

    def take(self, owner: str | None) -> None:
        """Count one more slot of `owner`, or refuse at once."""
        with self.lock:
            if owner is not None and self.running[owner] >= self.per_owner:
                raise TooManyRequestsError(
                    f"this API key's tenant already has {self.per_owner} {self.what} in "
                    f"progress{self.advice}",
                    code="fetch_quota_exceeded",
                    retry_after_s=1,
                )
            if sum(self.running.values()) >= self.total:
                raise ServiceUnavailableError(
                    f"too many {self.what} are in progress; retry shortly",
                    code="fetch_capacity_exceeded",
                    retry_after_s=1,
                )
            self.running[owner] += 1

    def give_back(self, owner: str | None) -> None:
        """One of `owner`'s slots is free again."""
        with self.lock:
            self.running[owner] -= 1
            if self.running[owner] <= 0:
                del self.running[owner]

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot of the current owner (`FETCHING_FOR`) for the block."""
        owner = FETCHING_FOR.get()
        self.take(owner)
        try:
            yield
        finally:
            self.give_back(owner)


LOOKUPS = OwnerSlots(
    MAX_LOOKUPS, MAX_LOOKUPS_PER_OWNER, "host name lookups", "; retry once its hosts answer"
)


def resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """Every address the host resolves to (a literal IP resolves to itself), within
    `timeout_s`."""
    owner = FETCHING_FOR.get()
    LOOKUPS.take(owner)
    answer: Future[list[Any]] = Future()

    def look_up() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting fetch
            answer.set_exception(exc)
        finally:
            LOOKUPS.give_back(owner)

    threading.Thread(target=look_up, name="vlmq-resolve", daemon=True).start()
    try:
        infos = answer.result(timeout=max(timeout_s, 0.0))
    except FutureTimeoutError as exc:
        raise FetchError(f"resolving {host!r} took longer than the fetch deadline") from exc
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def checked_address(
    host: str, port: int, allowlist: list[str], timeout_s: float = 10.0
) -> IPAddress:
    """The first address of `host`, after refusing the host if any address is blocked."""
    addresses = resolve(host, port, timeout_s)
    for address in addresses:
        if is_blocked_address(address) and not is_allowed(host, address, allowlist):
            raise OutboundRefusedError(
                f"{host} is not an address vlmq may reach (private or reserved); the operator "
                "can allow it with VLMQ_OUTBOUND_ALLOWLIST",
                param="url",
            )
    return addresses[0]


def parse_http_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL, or a 400."""
    try:
        parts = urlsplit(url)
        explicit_port = parts.port  # raises on a port out of range or not a number
    except ValueError as exc:  # also a malformed IPv6 literal ("http://[::1")
        raise InvalidRequestError(f"URL is malformed: {exc}", param="url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("URL must be an http(s) URL with a host", param="url")
    if explicit_port == 0:
        raise InvalidRequestError("URL has port 0", param="url")
    port = explicit_port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


@dataclass
class FetchedResponse:
    """What a fetch returned."""

    status: int
    body: bytes
    content_type: str


def declared_length(value: str | None) -> int:
    """A response's `Content-Length` as a number (0 when absent), or a FetchError.

    Repeated equal values (`10, 10`) are one length, as RFC 9110 allows; anything else
    is a broken server, not a server error of ours.
    """
    if not value:
        return 0
    lengths = {item.strip() for item in value.split(",")}
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise FetchError(f"the remote server sent an invalid Content-Length: {value[:40]!r}")
    return int(lengths.pop())


def fetch(
    url: str,
    *,
    allowlist: list[str],
    timeout_s: float,
    max_bytes: int,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    follow_redirects: bool = True,
) -> FetchedResponse:
    """Request `url` under the address rules, with one deadline for everything (DNS,
    connect, redirects, body) and a byte cap on the answer. Redirects are followed (each
    hop under the same rules) unless `follow_redirects` is off: then a redirect is the
    answer."""
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port = parse_http_url(url)
        address = checked_address(host, port, allowlist, remaining(deadline, host))
        pool_kwargs: dict[str, object] = {
            "timeout": urllib3.Timeout(total=remaining(deadline, host)),
            "retries": False,
        }
        pool: urllib3.HTTPConnectionPool
        if scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                str(address),
                port,
                server_hostname=host,
                assert_hostname=host,
                **pool_kwargs,  # type: ignore[arg-type]
            )
        else:
            pool = urllib3.HTTPConnectionPool(str(address), port, **pool_kwargs)  # type: ignore[arg-type]
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request_headers = {"Host": parts.netloc.rsplit("@", 1)[-1], **(headers or {})}
        try:
            response = pool.urlopen(
                method,
                path,
                body=body,
                headers=request_headers,
                redirect=False,
                preload_content=False,
            )
            redirected = response.status in (301, 302, 303, 307, 308)
            if follow_redirects and redirected and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                response.release_conn()
                continue
            if declared_length(response.headers.get("Content-Length")) > max_bytes:
                raise PayloadTooLargeError(f"remote body is over {max_bytes} bytes", param="url")
            data = read_body(response, max_bytes, deadline, host)
            return FetchedResponse(response.status, data, response.headers.get("Content-Type", ""))
        except urllib3.exceptions.HTTPError as exc:
            if time.monotonic() >= deadline:
                raise FetchError(f"fetching from {host} took longer than {timeout_s:g} s") from exc
            raise FetchError(f"could not fetch from {host}: {describe(exc)}") from exc
        finally:
            pool.close()
    raise FetchError("too many redirects", param="url")


def remaining(deadline: float, host: str) -> float:
    """Seconds left before the fetch's deadline, or a FetchError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"fetching from {host} took longer than the fetch deadline")
    return left


def read_body(
    response: urllib3.BaseHTTPResponse, max_bytes: int, deadline: float, host: str
) -> bytes:
    """The body, at most `max_bytes` of it, read before the deadline.

    A socket timeout bounds each read, not the transfer: a watchdog shuts the connection
    at the deadline, so a slow drip cannot hold the fetch past it.
    """
    watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), response.shutdown)
    watchdog.daemon = True
    watchdog.start()
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = response.read1(READ_CHUNK_BYTES, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLargeError(f"remote body is over {max_bytes} bytes", param="url")
            chunks.append(chunk)
            remaining(deadline, host)
        remaining(deadline, host)  # a shut socket reads as the end of the body
    except (OSError, ValueError) as exc:  # the watchdog closed the socket under the read
        remaining(deadline, host)
        raise FetchError(f"could not read the answer of {host}") from exc
    finally:
        watchdog.cancel()
    return b"".join(chunks)


def describe(exc: urllib3.exceptions.HTTPError) -> str:
    """What went wrong, in words (not an exception's class name)."""
    if isinstance(
        exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    ):
        return "the connection failed"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "the server broke the connection or answered malformed HTTP"
    if isinstance(exc, urllib3.exceptions.InvalidHeader):
        return "the server sent an invalid header (such as a conflicting Content-Length)"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "the server stopped answering"
    return "the request failed"
