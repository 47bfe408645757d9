"""A job's or batch's webhook subscription, checked at submit time, before anything is stored:
the URL (http(s), not a literal blocked address) and the events it asks for."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from services.core import outbound
from services.core.config import Settings
from services.core.errors import InvalidRequestError

EVENTS = ("start", "completed")
MAX_URL_CHARS = 2000


@dataclass(frozen=True)
class WebhookSubscription:
    """Where to POST a job's events, and which events."""

    url: str
    events: list[str]


def parse_subscription(
    url: object, events_filter: object, settings: Settings
) -> WebhookSubscription | None:
    """The `webhook` and `webhook_events_filter` of a request, checked; None without a webhook.

    Refused before anything is stored: a URL that is not http(s), and one whose host is a
    literal IP in a blocked range (the resolved addresses are checked again at delivery).
    """
    if url is None or url == "":
        if events_filter is not None:
            raise InvalidRequestError(
                "webhook_events_filter needs a webhook", param="webhook_events_filter"
            )
        return None
    if not isinstance(url, str):
        raise InvalidRequestError("webhook must be a URL string", param="webhook")
    return WebhookSubscription(
        url=check_webhook_url(url, settings.outbound_allowed),
        events=parse_events(events_filter),
    )


def parse_events(events_filter: object) -> list[str]:
    """The events a webhook asks for (default: all), without duplicates, in EVENTS order."""
    if events_filter is None:
        return list(EVENTS)
    if not isinstance(events_filter, list) or not all(isinstance(e, str) for e in events_filter):
        raise InvalidRequestError(
            "webhook_events_filter must be a list of event names", param="webhook_events_filter"
        )
    unknown = sorted(set(events_filter) - set(EVENTS))
    if unknown or not events_filter:
        raise InvalidRequestError(
            f"webhook_events_filter takes one or more of {', '.join(EVENTS)}",
            param="webhook_events_filter",
        )
    return [event for event in EVENTS if event in events_filter]


def check_webhook_url(url: str, allowlist: list[str]) -> str:
    """The URL, if it is http(s) and not a literal blocked address; otherwise a 400."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequestError(f"webhook is over {MAX_URL_CHARS} characters", param="webhook")
    if not url.isprintable():
        # A control character or a lone surrogate is never part of a URL (RFC 3986 has them
        # percent-encoded), and the database cannot store a NUL or an unpaired surrogate.
        raise InvalidRequestError("webhook must be a URL of printable characters", param="webhook")
    try:
        _, host, _ = outbound.parse_http_url(url)
    except (InvalidRequestError, ValueError) as exc:  # ValueError: a malformed port
        raise InvalidRequestError("webhook must be an http(s) URL", param="webhook") from exc
    address = literal_address(host)
    if (
        address is not None
        and outbound.is_blocked_address(address)
        and not outbound.is_allowed(host, address, allowlist)
    ):
        raise outbound.OutboundRefusedError(
            f"webhook host {host} is a private or reserved address", param="webhook"
        )
    return url


def literal_address(host: str) -> outbound.IPAddress | None:
    """The address a host names without DNS: `10.0.0.1`, `::1`, and also `2130706433`,
    `0x7f.1` or `127.1`, which resolvers read as IPv4 too. None for a host name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # ValueError: a NUL or a character ASCII cannot encode
        return None
