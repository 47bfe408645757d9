"""The answer cache: deterministic requests are answered from Redis without a worker."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.support import data_url, shape_png

pytestmark = pytest.mark.usefixtures("worker")


def ask(client: FlaskClient, auth: dict[str, str], **extra: object) -> dict[str, object]:
    body = {
        "image": data_url(shape_png("yellow", "triangle")),
        "question": "what shape?",
        "max_tokens": 3,
        **extra,
    }
    response = client.post("/v1/jobs", json=body, headers={**auth, "Prefer": "wait=30"})
    assert response.status_code == 202
    job = response.get_json()
    assert job["status"] == "succeeded", job
    return dict(job)


def test_repeated_greedy_request_is_a_cache_hit(client: FlaskClient, auth: dict[str, str]) -> None:
    first = ask(client, auth)
    second = ask(client, auth)
    assert first["cache_hit"] is False and second["cache_hit"] is True
    assert second["output"] == first["output"]
    # A hit never reached a worker: no attempt, no queue time.
    assert second["attempts"] == 0 and second["metrics"]["inference_ms"] == 0


def test_sampling_without_seed_is_never_cached(client: FlaskClient, auth: dict[str, str]) -> None:
    ask(client, auth, temperature=0.7)
    again = ask(client, auth, temperature=0.7)
    assert again["cache_hit"] is False and again["attempts"] == 1


def test_sampling_with_a_seed_is_cached(client: FlaskClient, auth: dict[str, str]) -> None:
    ask(client, auth, temperature=0.7, seed=11)
    assert ask(client, auth, temperature=0.7, seed=11)["cache_hit"] is True


def test_cache_is_scoped_to_the_tenant(
    client: FlaskClient, auth: dict[str, str], other_api_key: str
) -> None:
    ask(client, auth, question="is there a triangle?")
    other = ask(
        client, {"Authorization": f"Bearer {other_api_key}"}, question="is there a triangle?"
    )
    assert other["cache_hit"] is False


def test_different_parameters_miss(client: FlaskClient, auth: dict[str, str]) -> None:
    ask(client, auth, max_tokens=2)
    assert ask(client, auth, max_tokens=1)["cache_hit"] is False
