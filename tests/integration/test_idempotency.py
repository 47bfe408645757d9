"""`Idempotency-Key` on `/v1/jobs` and `/v1/chat/completions`, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from services.core.db import session_scope, utcnow
from services.core.runtime import Runtime
from services.core.tables import IdempotencyKey, Job
from tests.fake_stack import FakeStack, terminal
from tests.support import data_url, shape_png, wait_until

QUESTION = "what color is the shape?"


def job_body(**extra: Any) -> dict[str, Any]:
    """A `/v1/jobs` body; `metadata` makes it unique to the test where needed."""
    return {"image": data_url(shape_png()), "question": QUESTION, "max_tokens": 3, **extra}


def chat_body(**extra: Any) -> dict[str, Any]:
    """A `/v1/chat/completions` body asking the same as `job_body`."""
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(shape_png())}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
        "max_tokens": 3,
        **extra,
    }


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    """Headers with an idempotency key."""
    return {**auth, "Idempotency-Key": key}


def count_jobs(runtime: Runtime) -> int:
    """Jobs in the database (all tenants)."""
    with runtime.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Job)) or 0)


def test_same_key_and_body_return_the_same_job(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    key = secrets.token_hex(8)
    before = count_jobs(runtime)
    first = client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key))
    again = client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key))
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/v1/jobs/{first.get_json()['id']}"
    assert count_jobs(runtime) == before + 1


def test_multipart_and_json_of_the_same_request_match(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    key = secrets.token_hex(8)
    form = client.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(shape_png()), "s.png"), "question": QUESTION, "max_tokens": "3"},
        headers=keyed(auth, key),
    )
    body = client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key))
    assert form.status_code == body.status_code == 202, body.get_json()
    assert form.get_json()["id"] == body.get_json()["id"]


@pytest.mark.parametrize(
    ("path", "second"),
    [
        ("/v1/jobs", job_body(max_tokens=4)),
        ("/v1/jobs", job_body(metadata={"run": "other"})),
        ("/v1/jobs", job_body(webhook="https://example.com/hook")),
        ("/v1/jobs", job_body(question="what shape is in the image?")),
        ("/v1/chat/completions", chat_body()),  # the same request, another endpoint
    ],
)
def test_same_key_with_another_body_is_422(
    client: FlaskClient, auth: dict[str, str], path: str, second: dict[str, Any]
) -> None:
    key = secrets.token_hex(8)
    assert client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key)).status_code == 202
    response = client.post(path, json=second, headers=keyed(auth, key))
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["param"] == "Idempotency-Key"


def test_keys_are_scoped_per_tenant(
    client: FlaskClient, auth: dict[str, str], other_api_key: str
) -> None:
    key = secrets.token_hex(8)
    mine = client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key))
    other_auth = {"Authorization": f"Bearer {other_api_key}"}
    theirs = client.post("/v1/jobs", json=job_body(), headers=keyed(other_auth, key))
    assert mine.status_code == theirs.status_code == 202
    assert mine.get_json()["id"] != theirs.get_json()["id"]


def test_an_expired_key_is_replaced(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    key = secrets.token_hex(8)
    first = client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key)).get_json()
    # Let the key expire (as VLMQ_IDEMPOTENCY_TTL_S passing would).
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    other = client.post("/v1/jobs", json=job_body(max_tokens=5), headers=keyed(auth, key))
    assert other.status_code == 202, other.get_json()
    assert other.get_json()["id"] != first["id"]
    again = client.post("/v1/jobs", json=job_body(max_tokens=5), headers=keyed(auth, key))
    assert again.get_json()["id"] == other.get_json()["id"]
    with runtime.sessions() as session:
        rows = session.scalars(sa.select(IdempotencyKey).where(IdempotencyKey.key == key)).all()
    assert [row.object_id for row in rows] == [other.get_json()["id"]]


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there", "é"])
def test_malformed_keys_are_400(client: FlaskClient, auth: dict[str, str], key: str) -> None:
    response = client.post("/v1/jobs", json=job_body(), headers=keyed(auth, key))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["param"] == "Idempotency-Key"


def test_fifty_concurrent_duplicates_make_one_job(
    app: Flask, auth: dict[str, str], runtime: Runtime
) -> None:
    key = secrets.token_hex(8)
    body = job_body(metadata={"run": key})
    before = count_jobs(runtime)
    start = threading.Barrier(50)

    def submit(_: int) -> tuple[int, str]:
        client = app.test_client()
        start.wait()
        response = client.post("/v1/jobs", json=body, headers=keyed(auth, key))
        return response.status_code, response.get_json().get("id", response.get_json())

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(submit, range(50)))
    assert {status for status, _ in answers} == {202}, answers
    assert len({job_id for _, job_id in answers}) == 1, answers
    assert count_jobs(runtime) == before + 1


@pytest.mark.fake_backend("SlowFakeBackend", sync_timeout_s=4)
def test_chat_key_in_flight_is_409_then_replays_the_answer(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    key = secrets.token_hex(8)
    headers = keyed(auth, key)
    client = fake_stack.client

    def job_of_key() -> str | None:
        with fake_stack.runtime.sessions() as session:
            return session.scalar(
                sa.select(IdempotencyKey.object_id).where(IdempotencyKey.key == key)
            )

    # No worker yet: the first call waits (then times out, 504) while its job stays queued.
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(
            lambda: client.post("/v1/chat/completions", json=chat_body(), headers=headers)
        )
        job_id = wait_until(job_of_key, 20, "the first call's job")
        response = client.post("/v1/chat/completions", json=chat_body(), headers=headers)
        assert response.status_code == 409, response.get_json()
        assert response.get_json()["error"]["code"] == "idempotency_key_in_flight"
        assert waiting.result().status_code == 504
    different = client.post("/v1/chat/completions", json=chat_body(seed=1), headers=headers)
    assert different.status_code == 422

    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0")
    terminal(fake_stack, auth, job_id)
    replay = client.post("/v1/chat/completions", json=chat_body(), headers=headers)
    assert replay.status_code == 200, replay.get_json()
    assert replay.get_json()["id"] == "chatcmpl-" + job_id.removeprefix("job_")
    assert replay.get_json()["choices"][0]["message"]["content"] == f"echo: {QUESTION}"
