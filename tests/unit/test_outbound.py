"""Outbound address rules: every private, loopback, link-local, CGNAT and metadata class."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from services.core.config import Settings
from services.core.errors import InvalidRequestError, ServiceUnavailableError, TooManyRequestsError
from services.core.inputs.images import fetch_image_url
from services.core.outbound import (
    LOOKUPS,
    MAX_LOOKUPS_PER_OWNER,
    FetchError,
    OutboundRefusedError,
    checked_address,
    fetch,
    fetching_for,
    is_allowed,
    is_blocked_address,
    resolve,
)
from services.core.webhooks.subscriptions import check_webhook_url, literal_address
from tests.support import wait_until
from tests.webhook_receiver import Reply, WebhookReceiver

# (address, the class it stands for)
BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback (all of 127/8)"),
    ("::1", "IPv6 loopback"),
    ("10.1.2.3", "private 10/8"),
    ("172.16.0.1", "private 172.16/12"),
    ("172.31.255.255", "private 172.16/12 (end)"),
    ("192.168.1.1", "private 192.168/16"),
    ("100.64.0.1", "CGNAT 100.64/10"),
    ("100.127.255.254", "CGNAT 100.64/10 (end)"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local 169.254/16"),
    ("fe80::1", "IPv6 link-local"),
    ("fc00::1", "IPv6 ULA fc00::/7"),
    ("fd12:3456::1", "IPv6 ULA fd00::/8"),
    ("fd00:ec2::254", "AWS metadata over IPv6"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
    ("::ffff:100.64.0.1", "IPv4-mapped CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("::", "IPv6 unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "IPv6 multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
# Spellings of private addresses that resolvers accept: they must be refused all the same.
ENCODED = [
    ("2130706433", "127.0.0.1 as one decimal number"),
    ("0x7f000001", "127.0.0.1 as one hex number"),
    ("0177.0.0.1", "127.0.0.1 in octal"),
    ("127.1", "127.0.0.1 shortened"),
    ("167772161", "10.0.0.1 as one decimal number"),
    ("2852039166", "169.254.169.254 as one decimal number"),
]


@pytest.mark.parametrize(("address", "kind"), BLOCKED, ids=[kind for _, kind in BLOCKED])
def test_blocked_classes(address: str, kind: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address)), kind


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(("host", "kind"), ENCODED, ids=[kind for _, kind in ENCODED])
def test_encoded_private_addresses_are_refused(host: str, kind: str) -> None:
    # The resolver turns these into the address; the check sees the address.
    with pytest.raises(OutboundRefusedError):
        checked_address(host, 80, [])
    # Webhook URLs are refused at submit time already, without DNS.
    address = literal_address(host)
    assert address is not None and is_blocked_address(address), kind
    with pytest.raises(OutboundRefusedError):
        check_webhook_url(f"http://{host}/hook", [])


@pytest.mark.parametrize("address", [address for address, _ in BLOCKED])
def test_webhook_urls_with_blocked_literal_hosts_are_refused(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundRefusedError):
        check_webhook_url(f"https://{host}:8443/hook", [])


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "http:///x", "x"])
def test_webhook_urls_must_be_http(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_webhook_url(url, [])


def test_webhook_url_checks() -> None:
    assert check_webhook_url("https://hooks.example.com/x", []) == "https://hooks.example.com/x"
    assert check_webhook_url("http://127.0.0.1:9/x", ["127.0.0.1"]) == "http://127.0.0.1:9/x"
    # A host name is resolved at delivery, where every address is checked.
    assert literal_address("localhost") is None


def test_allowlist_by_cidr_and_host() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert is_allowed("localhost", loopback, ["127.0.0.0/8"])
    assert is_allowed("localhost", loopback, ["localhost"])
    assert not is_allowed("localhost", loopback, ["10.0.0.0/8"])
    assert checked_address("127.0.0.1", 80, ["127.0.0.1"]) == loopback


def test_redirect_to_a_private_address_is_refused(receiver: WebhookReceiver) -> None:
    receiver.script("/start", Reply(302, location="http://127.0.0.2/"))
    with pytest.raises(OutboundRefusedError, match="127.0.0.2"):
        fetch(receiver.url("/start"), allowlist=["127.0.0.1"], timeout_s=5, max_bytes=1024)
    assert len(receiver.requests("/start")) == 1


def test_redirect_within_the_allowlist_is_followed(receiver: WebhookReceiver) -> None:
    receiver.script("/start", Reply(307, location="/next"))
    response = fetch(
        receiver.url("/start"),
        allowlist=["127.0.0.1"],
        timeout_s=5,
        max_bytes=1024,
        method="POST",
        body=b"{}",
    )
    assert response.status == 200
    assert [r.path for r in receiver.requests("/next")] == ["/next"]
    assert receiver.requests("/next")[0].body == b"{}"


@pytest.mark.parametrize(
    "address",
    [
        "2002:0a00:0001::1",  # 6to4 of 10.0.0.1
        "2002:7f00:0001::",  # 6to4 of 127.0.0.1
        "64:ff9b::10.0.0.1",  # NAT64 of 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8: 2001::/32 is not global
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_blocked(address: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["2002:0808:0808::1", "64:ff9b::8.8.8.8"])
def test_ipv6_forms_of_public_ipv4_addresses_are_not(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address))


class RawHttpServer:
    """A loopback server that answers every connection with `head`, then drips `body`
    one byte per `drip_s` (a misbehaving image host)."""

    def __init__(self, head: bytes, body: bytes = b"", drip_s: float = 0.0) -> None:
        self.head, self.body, self.drip_s = head, body, drip_s
        self.connections = 0  # accepted so far
        self.sent = 0  # body bytes sent so far, over every connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                self.connections += 1
                threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(self.head)
            for byte in self.body:
                time.sleep(self.drip_s)
                connection.sendall(bytes([byte]))
                self.sent += 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def dripping_server() -> Iterator[RawHttpServer]:
    server = RawHttpServer(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", b"x" * 40, 0.2)
    yield server
    server.close()


def test_one_deadline_covers_the_whole_body(dripping_server: RawHttpServer) -> None:
    # Each byte comes well within the deadline; the transfer as a whole does not, and the
    # fetch gives up with most of the body still to come.
    with pytest.raises(FetchError, match="longer than"):
        fetch(
            f"http://127.0.0.1:{dripping_server.port}/slow.png",
            allowlist=["127.0.0.1"],
            timeout_s=1.0,
            max_bytes=1024,
        )
    assert dripping_server.sent < len(dripping_server.body)


def test_dns_resolution_is_bounded_by_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = threading.Event()

    def hung_fake_getaddrinfo(*_: object, **__: object) -> list[object]:
        """A resolver that answers only once the test lets it."""
        answer.wait(30)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hung_fake_getaddrinfo)
    try:
        with pytest.raises(FetchError, match="resolving .* took longer than the fetch deadline"):
            fetch("http://images.example/x.png", allowlist=[], timeout_s=0.5, max_bytes=1024)
    finally:
        answer.set()


@pytest.mark.parametrize(
    ("content_length", "accepted"),
    [("10, 10", True), ("10, 20", False), ("ten", False), ("-1", False)],
)
def test_odd_content_lengths_are_a_fetch_error_not_a_crash(
    content_length: str, accepted: bool
) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
    server = RawHttpServer(head.encode(), b"0123456789")
    try:
        url = f"http://127.0.0.1:{server.port}/x.png"
        if accepted:
            response = fetch(url, allowlist=["127.0.0.1"], timeout_s=2, max_bytes=1024)
            assert response.body == b"0123456789"
        else:
            with pytest.raises(FetchError, match="invalid"):
                fetch(url, allowlist=["127.0.0.1"], timeout_s=2, max_bytes=1024)
    finally:
        server.close()


def test_image_fetches_past_the_process_cap_are_refused_at_once(
    dripping_server: RawHttpServer,
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, max_concurrent_fetches=2, fetch_timeout_s=2, outbound_allowlist="127.0.0.1"
    )
    url = f"http://127.0.0.1:{dripping_server.port}/slow.png"
    outcomes: list[BaseException] = []

    def slow_fetch() -> None:
        try:
            fetch_image_url(url, settings)
        except Exception as exc:  # noqa: BLE001 - the deadline error is expected
            outcomes.append(exc)

    holders = [threading.Thread(target=slow_fetch) for _ in range(2)]
    for thread in holders:
        thread.start()
    wait_until(lambda: dripping_server.connections == 2, 10, "two fetches holding their slots")
    # Refused without waiting for a slot: it never reaches the server.
    with pytest.raises(ServiceUnavailableError) as refused:
        fetch_image_url(url, settings)
    assert dripping_server.connections == 2
    assert refused.value.headers["Retry-After"] == "1"
    for thread in holders:
        thread.join()
    assert all(isinstance(exc, FetchError) for exc in outcomes)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999/x.png", "http://127.0.0.1:abc/x", "https://[::1", "http://h:0/"]
)
def test_malformed_urls_are_a_400(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        fetch(url, allowlist=[], timeout_s=1, max_bytes=10)


def test_one_tenant_holds_at_most_its_share_of_the_fetch_slots(
    dripping_server: RawHttpServer,
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        max_concurrent_fetches=3,
        tenant_max_fetches=2,
        fetch_timeout_s=2,
        outbound_allowlist="127.0.0.1",
    )
    url = f"http://127.0.0.1:{dripping_server.port}/slow.png"

    def slow_fetch(tenant: str) -> None:
        with fetching_for(tenant), contextlib.suppress(FetchError):
            fetch_image_url(url, settings)

    holders = [threading.Thread(target=slow_fetch, args=("slow-tenant",)) for _ in range(2)]
    for thread in holders:
        thread.start()
    wait_until(lambda: dripping_server.connections == 2, 10, "the slow tenant's two fetches")
    with fetching_for("slow-tenant"), pytest.raises(TooManyRequestsError) as refused:
        fetch_image_url(url, settings)
    assert refused.value.code == "fetch_quota_exceeded"
    assert "VLMQ_TENANT_MAX_FETCHES" in str(refused.value)
    assert dripping_server.connections == 2
    # Another tenant still has a slot of its own.
    other = threading.Thread(target=slow_fetch, args=("other-tenant",))
    other.start()
    wait_until(lambda: dripping_server.connections == 3, 10, "the other tenant's fetch")
    for thread in [*holders, other]:
        thread.join()


def test_a_tenants_hung_lookups_fill_its_own_share_not_everyones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def hung_fake_getaddrinfo(host: str, *args: object, **kwargs: object) -> list[object]:
        """A resolver whose `hung.example` answers only once the test lets it."""
        if host == "hung.example":
            answer.wait(30)
            return []
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", hung_fake_getaddrinfo)
    try:
        with fetching_for("hung-tenant"):
            for _ in range(MAX_LOOKUPS_PER_OWNER):
                # Each fetch gives up at its deadline; its lookup goes on, counted.
                with pytest.raises(FetchError, match="longer than the fetch deadline"):
                    resolve("hung.example", 80, 0.2)
            with pytest.raises(TooManyRequestsError) as refused:
                resolve("hung.example", 80, 0.2)
            assert refused.value.code == "fetch_quota_exceeded"
        with fetching_for("other-tenant"):
            assert resolve("127.0.0.1", 80, 2.0) == [ipaddress.ip_address("127.0.0.1")]
    finally:
        answer.set()
    wait_until(lambda: not LOOKUPS.running, 10, "the hung lookups to return")
