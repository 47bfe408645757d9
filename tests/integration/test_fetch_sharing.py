"""Image fetch capacity is shared fairly: one tenant's slow image URLs take at most its own
share of an API process's fetch slots, and another tenant's fetches go on."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

from services.api import create_app
from services.core.config import Settings
from tests.faults.stack import report
from tests.support import shape_png, wait_until
from tests.unit.test_outbound import RawHttpServer
from vlmq.cli import create_key


def test_one_tenants_forty_slow_image_urls_refuse_none_of_another_tenants(
    settings: Settings,
) -> None:
    png = shape_png("red")
    fast = RawHttpServer(
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(png),
        png,
    )
    # One byte every half second: each fetch holds its slot until the 3 s deadline.
    slow = RawHttpServer(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n", b"x" * 4000, 0.5)
    app = create_app(settings.with_overrides(fetch_timeout_s=3.0))
    slow_key = create_key(settings, f"slow-{secrets.token_hex(3)}", "tests")
    other_key = create_key(settings, f"other-{secrets.token_hex(3)}", "tests")

    def post(key: str, url: str) -> int:
        body = {"image": url, "question": "what color is the shape?"}
        headers = {"Authorization": f"Bearer {key}"}
        return app.test_client().post("/v1/jobs", json=body, headers=headers).status_code

    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            slow_url = f"http://127.0.0.1:{slow.port}/slow.png"
            flood = [pool.submit(post, slow_key, slow_url) for _ in range(40)]
            share = settings.tenant_max_fetches
            wait_until(lambda: slow.connections >= share, 10, "the slow tenant's share in use")
            fast_url = f"http://127.0.0.1:{fast.port}/red.png"
            # The other tenant fetches within its own share (four at a time).
            with ThreadPoolExecutor(max_workers=share) as other_pool:
                others = list(other_pool.map(lambda _: post(other_key, fast_url), range(10)))
            flooded = sorted(future.result() for future in flood)
    finally:
        app.extensions["vlmq"].close()
        fast.close()
        slow.close()
    report(
        "fetch_sharing",
        slow_tenant_urls=40,
        slow_tenant_refused_429=flooded.count(429),
        other_tenant_accepted=others.count(202),
        other_tenant_requests=len(others),
    )
    assert others == [202] * 10
    # The slow tenant held its share; the rest of its requests were refused for it alone.
    assert slow.connections == share
    assert flooded.count(429) == 40 - share and 503 not in flooded
