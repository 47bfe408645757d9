"""Outbound HTTP that never reaches private addresses unless the operator allows them.

Every request resolves the host itself, checks each address, and dials the checked IP
directly (the TLS name stays the host's), so DNS cannot change the answer between check
and connect. Redirects are followed by hand and checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

from services.core.errors import InvalidRequestError, PayloadTooLargeError, VlmqError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Carrier-grade NAT and the cloud metadata ranges are not all in `is_private`.
EXTRA_BLOCKED = [
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fd00:ec2::/32"),
]
MAX_REDIRECTS = 3
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
            return is_blocked_address(embedded)
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


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (a literal IP resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}") from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def checked_address(host: str, port: int, allowlist: list[str]) -> IPAddress:
    """The first address of `host`, after refusing the host if any address is blocked."""
    addresses = resolve(host, port)
    for address in addresses:
        if is_blocked_address(address) and not is_allowed(host, address, allowlist):
            raise OutboundRefusedError(
                f"{host} resolves to {address}, a private or reserved address", param="url"
            )
    return addresses[0]


def parse_http_url(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an http(s) URL, or a 400."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError("URL must be an http(s) URL with a host", param="url")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


@dataclass
class FetchedResponse:
    """What a fetch returned."""

    status: int
    body: bytes
    content_type: str


def fetch(
    url: str,
    *,
    allowlist: list[str],
    timeout_s: float,
    max_bytes: int,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> FetchedResponse:
    """Request `url` under the address rules, with a deadline and a byte cap on the answer."""
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port = parse_http_url(url)
        address = checked_address(host, port, allowlist)
        pool_kwargs: dict[str, object] = {
            "timeout": urllib3.Timeout(total=timeout_s),
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
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                response.release_conn()
                continue
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise PayloadTooLargeError(f"remote body is over {max_bytes} bytes", param="url")
            data = response.read(max_bytes + 1, decode_content=True)
            if len(data) > max_bytes:
                raise PayloadTooLargeError(f"remote body is over {max_bytes} bytes", param="url")
            return FetchedResponse(response.status, data, response.headers.get("Content-Type", ""))
        except urllib3.exceptions.HTTPError as exc:
            raise FetchError(f"could not fetch {host}: {exc.__class__.__name__}") from exc
        finally:
            pool.close()
    raise FetchError("too many redirects", param="url")
