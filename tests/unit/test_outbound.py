"""Outbound address rules: every private, loopback, link-local, CGNAT and metadata class."""

from __future__ import annotations

import ipaddress

import pytest

from services.core.outbound import (
    OutboundRefusedError,
    checked_address,
    is_allowed,
    is_blocked_address,
)

BLOCKED = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", BLOCKED)
def test_blocked_classes(address: str) -> None:
    assert is_blocked_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    assert not is_blocked_address(ipaddress.ip_address(address))


def test_decimal_encoded_loopback_is_refused() -> None:
    # 2130706433 is 127.0.0.1 written as one number; the resolver turns it into the address.
    with pytest.raises(OutboundRefusedError):
        checked_address("2130706433", 80, [])


def test_allowlist_by_cidr_and_host() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    assert is_allowed("localhost", loopback, ["127.0.0.0/8"])
    assert is_allowed("localhost", loopback, ["localhost"])
    assert not is_allowed("localhost", loopback, ["10.0.0.0/8"])
    assert checked_address("127.0.0.1", 80, ["127.0.0.1"]) == loopback
