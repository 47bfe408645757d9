"""Every spelling of a loopback address is refused, and a listener on 127.0.0.1 hears nothing.

The listener is the target: if a spelling slipped through the outbound check, the request
would land there (it never leaves this machine) and the test would see it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.api import create_app
from services.core.config import Settings
from tests.support import data_url, shape_png
from tests.webhook_receiver import WebhookReceiver

# Host spellings that resolvers (or the kernel) turn into a loopback address.
LOOPBACK_SPELLINGS = [
    ("127.0.0.1", "dotted"),
    ("2130706433", "one decimal number"),
    ("0x7f000001", "one hex number"),
    ("0x7f.1", "hex, shortened"),
    ("0177.0.0.1", "octal"),
    ("017700000001", "one octal number"),
    ("127.1", "shortened"),
    ("127.0.1", "shortened to three parts"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped IPv6"),
    ("[::ffff:7f00:1]", "IPv4-mapped IPv6, hex"),
    ("0.0.0.0", "unspecified (connects to this host)"),
    ("0", "unspecified as one number"),
    ("[::]", "IPv6 unspecified"),
    ("[::1]", "IPv6 loopback"),
    ("localhost", "the name"),
    ("LocalHost", "the name, mixed case"),
]
LITERALS = [(host, kind) for host, kind in LOOPBACK_SPELLINGS if "localhost" not in host.lower()]


def port(receiver: WebhookReceiver) -> int:
    """The port the listener took on 127.0.0.1."""
    return int(receiver.base_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def listener() -> Iterator[WebhookReceiver]:
    """One listener on 127.0.0.1 for the whole table: it must hear nothing."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def strict_app(settings: Settings) -> Iterator[Flask]:
    """The API with no outbound allow-list (the test stacks allow 127.0.0.1)."""
    app = create_app(settings.with_overrides(outbound_allowlist=""))
    yield app
    app.extensions["vlmq"].close()


@pytest.fixture()
def strict_client(strict_app: Flask) -> FlaskClient:
    return strict_app.test_client()


@pytest.mark.parametrize(
    ("host", "kind"), LOOPBACK_SPELLINGS, ids=[k for _, k in LOOPBACK_SPELLINGS]
)
def test_image_urls_on_loopback_spellings_are_refused(
    strict_client: FlaskClient,
    auth: dict[str, str],
    listener: WebhookReceiver,
    host: str,
    kind: str,
) -> None:
    url = f"http://{host}:{port(listener)}/ssrf.png"
    response = strict_client.post(
        "/v1/jobs", json={"image": url, "question": "what color?"}, headers=auth
    )
    assert response.status_code == 400, (kind, response.get_json())
    assert response.get_json()["error"]["code"] == "outbound_address_refused", kind
    # The refusal says "not allowed", never what the name resolved to.
    if "localhost" in host.lower():
        assert "127.0.0.1" not in response.get_json()["error"]["message"]
    assert listener.requests("/ssrf.png") == []


@pytest.mark.parametrize(("host", "kind"), LITERALS, ids=[k for _, k in LITERALS])
def test_webhooks_on_loopback_spellings_are_refused(
    strict_client: FlaskClient,
    auth: dict[str, str],
    listener: WebhookReceiver,
    host: str,
    kind: str,
) -> None:
    body = {
        "image": data_url(shape_png()),
        "question": "what color?",
        "webhook": f"http://{host}:{port(listener)}/ssrf-hook",
    }
    response = strict_client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 400, (kind, response.get_json())
    assert response.get_json()["error"]["code"] == "outbound_address_refused", kind
    assert listener.requests("/ssrf-hook") == []
