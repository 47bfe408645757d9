"""Webhooks end to end: a real `vlmq background-worker` posts to a real HTTP receiver on
loopback, and the `standardwebhooks` library verifies every request."""

from __future__ import annotations

import io
import json
import secrets
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from standardwebhooks import Webhook

from services.core import maintenance
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.db import session_scope, utcnow
from services.core.ids import new_id
from services.core.runtime import Runtime
from services.core.tables import Job, Tenant, WebhookAttempt, WebhookDelivery
from services.core.webhooks.delivery import deliver
from services.core.webhooks.scheduling import schedule_delivery, schedule_job_event
from services.core.webhooks.signing import new_secret, signing_secrets
from tests.faults.stack import report
from tests.support import all_lookups_taken, data_url, shape_png, wait_until
from tests.webhook_receiver import ReceivedRequest, Reply, WebhookReceiver
from vlmq.cli import create_key

pytestmark = pytest.mark.usefixtures("background_worker")

# Attempts of the test worker: the first and one per delay of TEST_RETRY_SCHEDULE_S.
TEST_ATTEMPTS = 4


@pytest.fixture()
def secret(client: FlaskClient, auth: dict[str, str]) -> str:
    """The tenant's webhook secret, as a receiver would fetch it."""
    return str(client.get("/v1/webhooks/default/secret", headers=auth).get_json()["key"])


def verified(secret: str, request: ReceivedRequest) -> dict[str, Any]:
    """The payload of a request, after `standardwebhooks` verified its signature."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def schedule(runtime: Runtime, url: str, tenant: str = "acme") -> str:
    """Schedule a delivery of a small payload straight through the service (no job needed)."""
    with runtime.sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == tenant))
    assert tenant_id is not None
    return schedule_delivery(
        runtime, tenant_id=tenant_id, url=url, event="completed", payload={"hello": "world"}
    )


def delivery(runtime: Runtime, delivery_id: str) -> WebhookDelivery:
    """The delivery row, as stored now."""
    with runtime.sessions() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row


def attempts(runtime: Runtime, delivery_id: str) -> list[WebhookAttempt]:
    """The recorded attempts of a delivery, in order."""
    with runtime.sessions() as session:
        return list(
            session.scalars(
                sa.select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.attempt)
            )
        )


def settled(runtime: Runtime, delivery_id: str, timeout_s: float = 30) -> WebhookDelivery:
    """Wait until the delivery is no longer pending."""
    return wait_until(
        lambda: (row := delivery(runtime, delivery_id)).status != "pending" and row,
        timeout_s,
        f"delivery {delivery_id} settled",
        interval_s=0.1,
    )


def test_default_schedule_retries_within_ten_seconds() -> None:
    delays = Settings(_env_file=None).webhook_retry_delays_s  # type: ignore[call-arg]
    assert 0 < delays[0] <= 10 and delays == sorted(delays)


def test_secret_is_created_once_per_tenant(
    client: FlaskClient, auth: dict[str, str], other_api_key: str
) -> None:
    first = client.get("/v1/webhooks/default/secret", headers=auth)
    assert first.status_code == 200
    key = first.get_json()["key"]
    assert key.startswith("whsec_") and len(key) > 40
    assert client.get("/v1/webhooks/default/secret", headers=auth).get_json() == {"key": key}
    other = client.get(
        "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {other_api_key}"}
    )
    assert other.get_json()["key"] != key
    assert client.get("/v1/webhooks/default/secret").status_code == 401


@pytest.mark.usefixtures("worker")
def test_job_events_are_signed_and_verified(
    client: FlaskClient, auth: dict[str, str], receiver: WebhookReceiver, secret: str
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "image": data_url(shape_png("green")),
            "question": "what color is the shape?",
            "max_tokens": 3,
            "temperature": 0.7,  # never a cache hit: the job really starts
            "webhook": receiver.url("/hooks/job"),
        },
        headers=auth,
    )
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    received = receiver.wait_for("/hooks/job", 2)
    payloads = [verified(secret, request) for request in received]
    assert {p["id"] for p in payloads} == {job_id}
    assert {p["object"] for p in payloads} == {"job"}
    statuses = sorted(p["status"] for p in payloads)
    assert statuses == ["running", "succeeded"], statuses
    done = next(p for p in payloads if p["status"] == "succeeded")
    assert done["output"] is not None and done["completed_at"]
    for request in received:
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"].startswith("msg_")
        assert request.headers["webhook-signature"].startswith("v1,")
    assert len({r.headers["webhook-id"] for r in received}) == 2
    # A wrong secret does not verify.
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(received[0].body, received[0].headers)


@pytest.mark.usefixtures("worker")
def test_events_filter_sends_only_completed(
    client: FlaskClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: WebhookReceiver,
    secret: str,
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "image": data_url(shape_png("blue", "triangle")),
            "question": "what shape is in the image?",
            "max_tokens": 3,
            "temperature": 0.7,
            "webhook": receiver.url("/hooks/completed"),
            "webhook_events_filter": ["completed"],
        },
        headers=auth,
    )
    job_id = response.get_json()["id"]
    [request] = receiver.wait_for("/hooks/completed", 1)
    assert verified(secret, request)["status"] == "succeeded"
    with runtime.sessions() as session:
        events = session.scalars(
            sa.select(WebhookDelivery.event).where(WebhookDelivery.job_id == job_id)
        ).all()
    assert events == ["completed"]
    time.sleep(1)  # a gap: a second request, if one were sent, would be here by now
    assert len(receiver.requests("/hooks/completed")) == 1


def test_multipart_submission_takes_webhook_fields(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime, receiver: WebhookReceiver
) -> None:
    response = client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(shape_png()), "shape.png"),
            "question": "what color is the shape?",
            "webhook": receiver.url("/hooks/form"),
            "webhook_events_filter": "completed",
        },
        headers=auth,
    )
    assert response.status_code == 202, response.get_json()
    with runtime.sessions() as session:
        job = session.get(Job, response.get_json()["id"])
        assert job is not None
        assert job.webhook == receiver.url("/hooks/form") and job.webhook_events == ["completed"]


def test_retries_keep_the_webhook_id_until_a_2xx(
    runtime: Runtime, receiver: WebhookReceiver, secret: str
) -> None:
    receiver.script("/hooks/flaky", 500, 503, 200)
    delivery_id = schedule(runtime, receiver.url("/hooks/flaky"))
    received = receiver.wait_for("/hooks/flaky", 3)
    assert {r.headers["webhook-id"] for r in received} == {delivery_id}
    assert all(verified(secret, r) == {"hello": "world"} for r in received)
    # Backoff: each retry waits at least its delay of the test schedule (0.3 s, 0.6 s).
    assert received[1].at - received[0].at >= 0.25
    assert received[2].at - received[1].at >= 0.5
    row = settled(runtime, delivery_id)
    assert row.status == "delivered" and row.attempts == 3 and row.completed_at
    recorded = attempts(runtime, delivery_id)
    assert [a.status_code for a in recorded] == [500, 503, 200]
    assert [a.error for a in recorded] == ["HTTP 500", "HTTP 503", None]
    assert all(a.latency_ms >= 0 for a in recorded)


def test_410_stops_delivery(runtime: Runtime, receiver: WebhookReceiver) -> None:
    receiver.script("/hooks/gone", 410)
    delivery_id = schedule(runtime, receiver.url("/hooks/gone"))
    row = settled(runtime, delivery_id)
    assert row.status == "gone" and row.attempts == 1
    time.sleep(1.5)  # past the whole test retry schedule
    assert len(receiver.requests("/hooks/gone")) == 1


def test_timeouts_are_retried(runtime: Runtime, receiver: WebhookReceiver) -> None:
    # The test worker gives an attempt 1 s.
    receiver.script("/hooks/slow", Reply(200, delay_s=2.5), 200)
    delivery_id = schedule(runtime, receiver.url("/hooks/slow"))
    row = settled(runtime, delivery_id)
    assert row.status == "delivered" and row.attempts == 2
    first, second = attempts(runtime, delivery_id)
    assert first.status_code is None and "longer than 1 s" in (first.error or ""), first.error
    assert second.status_code == 200


def test_retries_used_up_fail_the_delivery(runtime: Runtime, receiver: WebhookReceiver) -> None:
    receiver.script("/hooks/down", *[500] * 10)
    delivery_id = schedule(runtime, receiver.url("/hooks/down"))
    row = settled(runtime, delivery_id)
    assert row.status == "failed" and row.attempts == TEST_ATTEMPTS
    assert [a.status_code for a in attempts(runtime, delivery_id)] == [500] * TEST_ATTEMPTS
    time.sleep(1)  # a gap past the retry schedule: no attempt beyond the last
    assert len(receiver.requests("/hooks/down")) == TEST_ATTEMPTS


def test_blocked_address_at_delivery_fails_without_retries(runtime: Runtime) -> None:
    # Stored without the submit-time check (as if the rules changed since): refused at delivery.
    delivery_id = schedule(runtime, "http://127.0.0.2/hook")
    row = settled(runtime, delivery_id)
    assert row.status == "failed" and row.attempts == 1
    [attempt] = attempts(runtime, delivery_id)
    assert attempt.status_code is None
    assert attempt.error and attempt.error.startswith("refused:") and "127.0.0.2" in attempt.error


def test_a_redirect_is_a_failed_attempt_never_followed(
    runtime: Runtime, receiver: WebhookReceiver
) -> None:
    receiver.script("/hooks/redirect", Reply(307, location=receiver.url("/hooks/elsewhere")))
    delivery_id = schedule(runtime, receiver.url("/hooks/redirect"))
    first = wait_until(lambda: attempts(runtime, delivery_id), 30, "the first attempt")[0]
    assert first.status_code == 307
    assert first.error and "redirect, not followed" in first.error
    # The signed request went to the URL given, and nowhere else.
    assert receiver.requests("/hooks/elsewhere") == []


def test_a_finished_delivery_is_a_no_op(runtime: Runtime, receiver: WebhookReceiver) -> None:
    delivery_id = schedule(runtime, receiver.url("/hooks/once"))
    assert settled(runtime, delivery_id).status == "delivered"
    # Duplicated messages (same or later attempt), directly and through the queue.
    assert deliver(runtime, delivery_id, 1) is None
    assert deliver(runtime, delivery_id, 2) is None
    runtime.broker.enqueue_webhook(delivery_id, 1)
    runtime.broker.enqueue_webhook(delivery_id, 2)
    time.sleep(1.5)  # a gap: a duplicate, if one were delivered, would be here by now
    assert len(receiver.requests("/hooks/once")) == 1
    assert len(attempts(runtime, delivery_id)) == 1


def test_an_event_scheduled_twice_makes_one_delivery(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime, receiver: WebhookReceiver
) -> None:
    # The job's "completed" event is reported twice more by hand (whether or not a worker
    # also finishes the job meanwhile): one delivery, one request.
    response = client.post(
        "/v1/jobs",
        json={
            "image": data_url(shape_png()),
            "question": "what color is the shape?",
            "webhook": receiver.url("/hooks/twice"),
            "webhook_events_filter": ["completed"],
        },
        headers=auth,
    )
    job_id = response.get_json()["id"]
    for _ in range(2):
        schedule_job_event(runtime, job_id, "completed")
    receiver.wait_for("/hooks/twice", 1)
    time.sleep(1)  # a gap: a second request, if one were sent, would be here by now
    assert len(receiver.requests("/hooks/twice")) == 1


def test_maintenance_pass_resends_a_delivery_whose_message_was_lost(
    settings: Settings, runtime: Runtime, receiver: WebhookReceiver, secret: str
) -> None:
    # Redis is unreachable when the event is scheduled: the row is stored, the message is not.
    dead = create_runtime(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    try:
        delivery_id = schedule(dead, receiver.url("/hooks/lost"))
    finally:
        dead.close()
    time.sleep(1)  # a gap: with no message queued, nothing is sent meanwhile
    assert receiver.requests("/hooks/lost") == []
    assert delivery(runtime, delivery_id).status == "pending"

    eager = create_runtime(settings.with_overrides(webhook_redeliver_after_s=0.5))
    try:
        maintenance.run_pass(eager)
    finally:
        eager.close()
    [request] = receiver.wait_for("/hooks/lost", 1)
    assert request.headers["webhook-id"] == delivery_id
    assert verified(secret, request) == {"hello": "world"}
    assert settled(runtime, delivery_id).status == "delivered"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"webhook": "ftp://example.com/hook"}, "webhook"),
        ({"webhook": "not a url"}, "webhook"),
        ({"webhook": 42}, "webhook"),
        ({"webhook": "http://127.0.0.2/hook"}, "webhook"),
        ({"webhook": "http://0.0.0.0/latest/meta-data"}, "webhook"),
        ({"webhook": "http://[::1]:8080/hook"}, "webhook"),
        ({"webhook": "http://[::ffff:127.0.0.2]/hook"}, "webhook"),
        ({"webhook": "http://2130706434/hook"}, "webhook"),  # 127.0.0.2 as one number
        ({"webhook": "http://0x7f.2/hook"}, "webhook"),  # 127.0.0.2 in hex shorthand
        ({"webhook": "http://0177.0.0.2/hook"}, "webhook"),  # 127.0.0.2 in octal
        ({"webhook": "https://example.com/", "webhook_events_filter": ["output"]}, None),
        ({"webhook": "https://example.com/", "webhook_events_filter": []}, None),
        ({"webhook": "https://example.com/", "webhook_events_filter": "completed"}, None),
        ({"webhook_events_filter": ["completed"]}, "webhook_events_filter"),
    ],
)
def test_bad_webhooks_are_refused_before_anything_is_stored(
    client: FlaskClient,
    auth: dict[str, str],
    runtime: Runtime,
    fields: dict[str, Any],
    param: str | None,
) -> None:
    with runtime.sessions() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Job))
    body = {"image": data_url(shape_png()), "question": "what color is the shape?", **fields}
    for path in ("/v1/jobs", "/v1/chat/completions"):
        chat = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": body["image"]}},
                        {"type": "text", "text": body["question"]},
                    ],
                }
            ],
            **fields,
        }
        response = client.post(path, json=body if path == "/v1/jobs" else chat, headers=auth)
        assert response.status_code == 400, (path, response.get_json())
        error = response.get_json()["error"]
        assert error["type"] == "invalid_request_error"
        if param:
            assert error["param"] == param, error
    with runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == before


def test_allowlisted_and_named_hosts_are_accepted_at_submit(
    client: FlaskClient, auth: dict[str, str], receiver: WebhookReceiver
) -> None:
    # Allow-listed loopback is accepted; a host name is resolved (and checked) at delivery.
    for url in (receiver.url("/hooks/ok"), "https://example.invalid/hook"):
        response = client.post(
            "/v1/jobs",
            json={"image": data_url(shape_png()), "question": "what color?", "webhook": url},
            headers=auth,
        )
        assert response.status_code == 202, response.get_json()
        assert json.loads(response.data)["id"].startswith("job_")


@pytest.mark.usefixtures("worker")
def test_a_job_shows_its_webhook_deliveries(
    client: FlaskClient,
    auth: dict[str, str],
    other_api_key: str,
    receiver: WebhookReceiver,
) -> None:
    other_auth = {"Authorization": f"Bearer {other_api_key}"}
    receiver.script("/hooks/status", 503, 200)
    response = client.post(
        "/v1/jobs",
        json={
            "image": data_url(shape_png("blue")),
            "question": "what color is the shape?",
            "temperature": 0.9,  # never a cache hit
            "webhook": receiver.url("/hooks/status"),
            "webhook_events_filter": ["completed"],
        },
        headers=auth,
    )
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    url = job["urls"]["webhook_deliveries"]
    assert url == f"/v1/jobs/{job['id']}/webhook_deliveries"

    def delivered() -> list[dict[str, Any]] | None:
        data: list[dict[str, Any]] = client.get(url, headers=auth).get_json()["data"]
        return data if data and data[0]["status"] == "delivered" else None

    [shown] = wait_until(delivered, 30, "the delivery to succeed on its second attempt")
    assert shown["event"] == "completed" and shown["attempts"] == 2
    assert shown["last_attempt"]["status_code"] == 200
    assert shown["url"] == receiver.url("/hooks/status")
    # Another tenant cannot see it.
    assert client.get(url, headers=other_auth).status_code == 404


def test_a_refused_delivery_says_why(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    with runtime.sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == "acme"))
    assert tenant_id is not None
    job_id = "job_webhookstatus" + str(int(time.time() * 1000))
    with runtime.sessions.begin() as session:
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant_id,
                kind="job",
                model="not-served",
                messages=[],
                params={},
                status="succeeded",
                metrics={},
                metadata_={},
                attempts=1,
                webhook="http://127.0.0.2/hook",
            )
        )
    delivery_id = schedule_delivery(
        runtime,
        tenant_id=tenant_id,
        url="http://127.0.0.2/hook",
        event="completed",
        payload={"id": job_id},
        job_id=job_id,
    )
    settled(runtime, delivery_id)
    [shown] = client.get(f"/v1/jobs/{job_id}/webhook_deliveries", headers=auth).get_json()["data"]
    assert shown["status"] == "failed" and shown["attempts"] == 1
    assert shown["last_attempt"]["status_code"] is None
    assert shown["last_attempt"]["error"].startswith("refused:")


def test_an_attempt_that_finds_no_outbound_capacity_is_not_counted(
    runtime: Runtime, receiver: WebhookReceiver, auth: dict[str, str]
) -> None:
    with runtime.sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == "acme"))
    delivery_id = new_id("msg")
    with session_scope(runtime.sessions) as session:
        session.add(
            WebhookDelivery(
                id=delivery_id,
                tenant_id=tenant_id,
                event="completed",
                url=receiver.url("/hooks/no-capacity"),
                payload={"hello": "world"},
                status="pending",
                attempts=0,
                # Not due: the maintenance pass leaves it to this test.
                next_attempt_at=utcnow() + timedelta(hours=1),
            )
        )
    with all_lookups_taken():
        assert deliver(runtime, delivery_id, 1) == "pending"
    # Not an attempt: nothing recorded, the count unchanged, the receiver never called.
    assert delivery(runtime, delivery_id).attempts == 0
    assert attempts(runtime, delivery_id) == []
    # The same attempt is sent again shortly, and made (by the background worker).
    assert settled(runtime, delivery_id).status == "delivered"
    assert [attempt.attempt for attempt in attempts(runtime, delivery_id)] == [1]
    assert len(receiver.requests("/hooks/no-capacity")) == 1


def test_one_tenants_hanging_endpoint_delays_another_tenants_webhook_by_seconds_at_most(
    runtime: Runtime, settings: Settings, receiver: WebhookReceiver, other_api_key: str
) -> None:
    # A tenant of its own, so that the other tests' tenants keep their share. Its endpoint
    # answers every attempt after 2.5 s: each times out (the test worker gives an attempt
    # 1 s), and is retried. Forty of them arrive first: five rounds of the worker's eight
    # threads, were they all given to that tenant.
    hanger = f"hanger-{secrets.token_hex(3)}"
    create_key(settings, hanger, "tests")
    hanging = []
    for n in range(40):
        receiver.script(f"/hooks/hang-{n}", *[Reply(200, delay_s=2.5)] * 8)
        hanging.append(schedule(runtime, receiver.url(f"/hooks/hang-{n}"), tenant=hanger))
    other = WebhookReceiver()
    try:
        started = time.monotonic()
        delivery_id = schedule(runtime, other.url("/hooks/fine"), tenant="globex")
        row = settled(runtime, delivery_id)
        took_s = time.monotonic() - started
    finally:
        other.close()
    report("webhook_isolation", hanging=len(hanging), other_tenant_seconds=round(took_s, 2))
    assert row.status == "delivered"
    # The hanging tenant holds at most `tenant_max_deliveries` of the worker's threads.
    assert took_s < 2.0


def test_secrets_are_sealed_at_rest_and_rotate_with_an_overlap(
    client: FlaskClient,
    auth: dict[str, str],
    runtime: Runtime,
    receiver: WebhookReceiver,
    secret: str,
) -> None:
    with runtime.sessions() as session:
        stored = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.name == "acme"))
    assert stored is not None and stored.startswith("enc:v1:")
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    with runtime.sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == "acme"))
    assert tenant_id is not None
    rotated = client.post("/v1/webhooks/default/secret/rotate", headers=auth)
    assert rotated.status_code == 200
    fresh = rotated.get_json()["key"]
    assert fresh != secret and fresh.startswith("whsec_")
    assert client.get("/v1/webhooks/default/secret", headers=auth).get_json() == {"key": fresh}
    assert signing_secrets(runtime, tenant_id) == [fresh, secret]
    # During the overlap a webhook is signed by both: a receiver verifies with either.
    delivery_id = schedule(runtime, receiver.url("/hooks/rotated"))
    [request] = receiver.wait_for("/hooks/rotated", 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified(fresh, request) == verified(secret, request) == {"hello": "world"}
    assert settled(runtime, delivery_id).status == "delivered"
    # Once the overlap is over, the new secret alone signs.
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(previous_webhook_secret_until=utcnow() - timedelta(seconds=1))
        )
    assert signing_secrets(runtime, tenant_id) == [fresh]


def test_a_start_event_scheduled_after_the_job_ended_still_reports_its_start(
    runtime: Runtime, receiver: WebhookReceiver, secret: str
) -> None:
    # The job ended before its start event's effect ran (an outbox entry the relay took
    # late, as after a worker's SIGKILL): the start delivery reports the start, not the end,
    # so a receiver never reads it as a second completion.
    with runtime.sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == "acme"))
    job_id = new_id("job")
    now = utcnow()
    with session_scope(runtime.sessions) as session:
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant_id,
                model="m",
                messages=[],
                params={},
                status="succeeded",
                output="red",
                result={"answer": "red"},
                attempts=1,
                created_at=now,
                started_at=now,
                completed_at=now,
                metrics={"inference_ms": 5.0},
                webhook=receiver.url("/hooks/late-start"),
                webhook_events=["start", "completed"],
            )
        )
    schedule_job_event(runtime, job_id, "start")
    schedule_job_event(runtime, job_id, "completed")
    receiver.wait_for("/hooks/late-start", 2)
    payloads = {
        request.headers["webhook-id"]: verified(secret, request)
        for request in receiver.requests("/hooks/late-start")
    }
    statuses = sorted((p["status"], p["output"], p["completed_at"]) for p in payloads.values())
    assert statuses == [("running", None, None), ("succeeded", "red", statuses[1][2])]
    assert statuses[1][2] is not None
