"""Outbound address rules: every private, loopback, link-local, CGNAT and metadata class."""

from __future__ import annotations

import ipaddress

import pytest

from services.core.errors import InvalidRequestError
from services.core.inputs.outbound import (
    OutboundRefusedError,
    checked_address,
    fetch,
    is_allowed,
    is_blocked_address,
)
from services.core.webhooks.subscriptions import check_webhook_url, literal_address
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
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_blocked(address: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["2002:0808:0808::1", "64:ff9b::8.8.8.8"])
def test_ipv6_forms_of_public_ipv4_addresses_are_not(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address))
