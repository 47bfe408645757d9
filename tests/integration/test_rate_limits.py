"""Per-tenant request rates and queue caps: 429 with Retry-After and OpenAI's headers, shared
by every API process through Redis, one tenant never slowing another; 503 with Redis down."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from services.api import create_app
from services.core import waiting
from services.core.auth import authenticate
from services.core.config import Settings
from services.core.runtime import Runtime
from tests.support import data_url, shape_png, wait_until
from vlmq.cli import create_key


def runtime_tenant(runtime: Runtime, auth: dict[str, str]) -> str:
    """The tenant id of an Authorization header."""
    with runtime.sessions() as session:
        return authenticate(session, auth["Authorization"], runtime.settings).tenant_id


def fresh_auth(settings: Settings) -> dict[str, str]:
    """The Authorization header of a new tenant (counters and caps start at zero)."""
    key = create_key(settings, f"tenant-{secrets.token_hex(4)}", "tests")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture()
def limited_apps(settings: Settings) -> Iterator[tuple[Flask, Flask]]:
    """Two API apps (two processes' worth of state) sharing one Redis, 5 requests a minute."""
    limited = settings.with_overrides(rate_limit="5/minute")
    apps = (create_app(limited), create_app(limited))
    yield apps
    for app in apps:
        app.extensions["vlmq"].close()


def test_a_tenant_over_its_rate_gets_429_with_openai_headers(
    limited_apps: tuple[Flask, Flask], settings: Settings
) -> None:
    client = limited_apps[0].test_client()
    auth = fresh_auth(settings)
    remaining = []
    for _ in range(5):
        response = client.get("/v1/jobs", headers=auth)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-requests"] == "5"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
        remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [4, 3, 2, 1, 0]
    refused = client.get("/v1/jobs", headers=auth)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.get_json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["Retry-After"]) <= 120  # within the next window
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # Another tenant is not slowed at all.
    assert client.get("/v1/jobs", headers=fresh_auth(settings)).status_code == 200
    # Health checks are never limited.
    assert client.get("/healthz").status_code == 200


def test_one_count_covers_every_route(
    limited_apps: tuple[Flask, Flask], settings: Settings
) -> None:
    client = limited_apps[0].test_client()
    auth = fresh_auth(settings)
    paths = ["/v1/jobs", "/v1/batches", "/v1/models", "/v1/batches", "/v1/jobs", "/v1/models"]
    assert [client.get(path, headers=auth).status_code for path in paths] == [200] * 5 + [429]


def test_the_count_is_shared_by_every_api_process(
    limited_apps: tuple[Flask, Flask], settings: Settings
) -> None:
    first, second = (app.test_client() for app in limited_apps)
    auth = fresh_auth(settings)
    statuses = [first.get("/v1/jobs", headers=auth).status_code for _ in range(3)]
    statuses += [second.get("/v1/jobs", headers=auth).status_code for _ in range(3)]
    assert statuses == [200] * 5 + [429]


def test_an_unfinished_job_cap_refuses_with_quota_exceeded(settings: Settings) -> None:
    # A model nobody serves: the jobs stay queued.
    capped = settings.with_overrides(
        tenant_max_queued=2, served_model_name=f"unserved-{secrets.token_hex(3)}"
    )
    app = create_app(capped)
    try:
        client = app.test_client()
        auth = fresh_auth(settings)
        body = {"image": data_url(shape_png()), "question": "what color?"}
        assert [client.post("/v1/jobs", json=body, headers=auth).status_code for _ in range(2)] == [
            202,
            202,
        ]
        refused = client.post("/v1/jobs", json=body, headers=auth)
        assert refused.status_code == 429
        assert refused.get_json()["error"]["code"] == "quota_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
        # Another tenant's cap is its own.
        assert client.post("/v1/jobs", json=body, headers=fresh_auth(settings)).status_code == 202
    finally:
        app.extensions["vlmq"].close()


def test_a_replay_at_the_cap_is_answered_and_moderation_counts_every_input(
    settings: Settings,
) -> None:
    capped = settings.with_overrides(
        tenant_max_queued=3, served_model_name=f"unserved-{secrets.token_hex(3)}"
    )
    app = create_app(capped)
    try:
        client = app.test_client()
        auth = fresh_auth(settings)
        body = {"image": data_url(shape_png()), "question": "what color?"}
        keyed = {**auth, "Idempotency-Key": "first-job"}
        first = client.post("/v1/jobs", json=body, headers=keyed)
        assert first.status_code == 202
        # Three inputs would take the tenant from one job to four: none is made.
        moderation = client.post("/v1/moderations", json={"input": ["a", "b", "c"]}, headers=auth)
        assert moderation.status_code == 429
        assert moderation.get_json()["error"]["code"] == "quota_exceeded"
        assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202
        assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202
        # At the cap: a new job is refused, the replay of an accepted one is answered.
        assert client.post("/v1/jobs", json=body, headers=auth).status_code == 429
        new_key = {**auth, "Idempotency-Key": "second-job"}
        assert client.post("/v1/jobs", json=body, headers=new_key).status_code == 429
        replay = client.post("/v1/jobs", json=body, headers=keyed)
        assert replay.status_code == 202
        assert replay.get_json()["id"] == first.get_json()["id"]
    finally:
        app.extensions["vlmq"].close()


def closed_loopback_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_with_redis_down_limited_routes_fail_closed_with_503(settings: Settings) -> None:
    down = settings.with_overrides(
        rate_limit="5/minute", redis_url=f"redis://127.0.0.1:{closed_loopback_port()}/0"
    )
    app = create_app(down)
    try:
        client = app.test_client()
        response = client.get("/v1/jobs", headers=fresh_auth(settings))
        assert response.status_code == 503
        assert response.get_json()["error"]["type"] == "service_unavailable_error"
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        app.extensions["vlmq"].close()


def test_requests_without_a_valid_key_are_limited_per_address(settings: Settings) -> None:
    app = create_app(settings.with_overrides(unauthenticated_rate_limit="5/minute"))
    client = app.test_client()
    # Each test run is a new address, so that its counter starts at zero.
    guesser = {"REMOTE_ADDR": f"127.0.{secrets.randbelow(250)}.{secrets.randbelow(250) + 2}"}
    neighbour = {"REMOTE_ADDR": "127.0.0.1" if guesser["REMOTE_ADDR"] != "127.0.0.1" else "::1"}
    wrong = {"Authorization": "Bearer vlmq_not-a-key"}
    try:
        statuses = [
            client.get("/v1/jobs", headers=wrong, environ_base=guesser).status_code,
            client.get("/v1/jobs", environ_base=guesser).status_code,  # no key at all
            client.get("/openapi.json", environ_base=guesser).status_code,
            *(
                client.get("/v1/jobs", headers=wrong, environ_base=guesser).status_code
                for _ in range(2)
            ),
        ]
        assert statuses == [401, 401, 200, 401, 401]
        refused = client.get("/v1/jobs", headers=fresh_auth(settings), environ_base=guesser)
        # Over the limit, even a right key waits: the key is not looked up at all.
        assert refused.status_code == 429
        error = refused.get_json()["error"]
        assert (
            error["code"] == "rate_limit_exceeded" and "without a valid API key" in error["message"]
        )
        assert "5 per 1 minute" in error["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # Health probes are never refused; another address and a valid key are not affected.
        assert client.get("/healthz", environ_base=guesser).status_code == 200
        assert client.get("/v1/jobs", headers=wrong, environ_base=neighbour).status_code == 401
        assert client.get("/v1/jobs", headers=fresh_auth(settings)).status_code == 200
    finally:
        app.extensions["vlmq"].close()


def test_a_tenant_holds_at_most_its_cap_of_calls_open(settings: Settings) -> None:
    # A model no worker serves: every call waits until its (short) deadline.
    capped = settings.with_overrides(
        tenant_max_waiting=2,
        sync_timeout_s=6,
        served_model_name=f"unserved-{secrets.token_hex(3)}",
    )
    app = create_app(capped)
    holder, other = fresh_auth(settings), fresh_auth(settings)
    chat = {
        "messages": [{"role": "user", "content": "hello?"}],
        "max_tokens": 2,
        "temperature": 1.0,
    }
    held: list[int] = []

    def hold() -> None:
        held.append(
            app.test_client().post("/v1/chat/completions", json=chat, headers=holder).status_code
        )

    threads = [threading.Thread(target=hold) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        runtime = app.extensions["vlmq"]
        tenant = runtime_tenant(runtime, holder)
        client = app.test_client()

        def held_open() -> bool:
            listed = client.get("/v1/jobs", headers=holder).get_json()["data"]
            return waiting.SLOTS.held[tenant] == 2 and len(listed) == 2

        wait_until(held_open, 10, "two calls held open, their jobs queued")
        refused = client.post("/v1/chat/completions", json=chat, headers=holder)
        assert refused.status_code == 429
        assert refused.get_json()["error"]["code"] == "waiting_limit_exceeded"
        assert "VLMQ_TENANT_MAX_WAITING" in refused.get_json()["error"]["message"]
        assert refused.headers["Retry-After"]
        stream = client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=holder)
        assert stream.status_code == 429
        # Nothing was queued for the refused calls.
        listed = client.get("/v1/jobs", headers=holder).get_json()["data"]
        assert len(listed) == 2
        # `Prefer: wait` is a preference: over the cap, the job is accepted and answered at once.
        started = time.monotonic()
        job = {"image": data_url(shape_png("red")), "question": "what color?", "temperature": 1.0}
        accepted = client.post("/v1/jobs", json=job, headers={**holder, "Prefer": "wait=5"})
        assert accepted.status_code == 202 and time.monotonic() - started < 2
        # Another tenant's slots are its own: it waits as asked.
        started = time.monotonic()
        waited = client.post("/v1/jobs", json=job, headers={**other, "Prefer": "wait=1"})
        assert waited.status_code == 202 and time.monotonic() - started >= 1
    finally:
        for thread in threads:
            thread.join(timeout=20)
        app.extensions["vlmq"].close()
    assert held == [504, 504]
