"""A dependency that is down answers 503 with Retry-After in the one error shape, never 500;
a job committed before Redis failed is accepted; `/readyz` says what is down and why."""

from __future__ import annotations

import pytest

from services.api import create_app
from services.core.config import Settings
from services.core.runtime import Runtime
from services.core.tables import Job
from tests.support import data_url, shape_png

NOTHING_LISTENS = "127.0.0.1:1"
OPERATOR = "an operator token"


def assert_503(response: object) -> None:
    """A 503 with Retry-After and the one error shape."""
    assert response.status_code == 503, response.get_json()  # type: ignore[attr-defined]
    assert response.headers["Retry-After"]  # type: ignore[attr-defined]
    error = response.get_json()["error"]  # type: ignore[attr-defined]
    assert error["type"] == "service_unavailable_error" and error["message"]


@pytest.fixture()
def redis_down(settings: Settings) -> Settings:
    """The stack's settings with a Redis that is not there."""
    return settings.with_overrides(redis_url=f"redis://{NOTHING_LISTENS}/0")


def test_with_redis_down_a_cacheable_job_is_refused_before_anything_is_stored(
    redis_down: Settings, auth: dict[str, str], runtime: Runtime
) -> None:
    client = create_app(redis_down).test_client()
    body = {"image": data_url(shape_png("blue")), "question": "refused while Redis is down?"}
    assert_503(client.post("/v1/jobs", json=body, headers=auth))


# Answered, not hung on retries: pytest-timeout fails a request stuck on the dead dependency.
@pytest.mark.timeout(60)
def test_with_redis_down_a_committed_job_is_accepted(
    redis_down: Settings, auth: dict[str, str], runtime: Runtime
) -> None:
    client = create_app(redis_down).test_client()
    body = {
        "image": data_url(shape_png("green")),
        "question": "accepted while Redis is down?",
        "temperature": 0.7,  # not cacheable: nothing to look up before storing
    }
    response = client.post("/v1/jobs", json=body, headers={**auth, "Prefer": "wait=1"})
    assert response.status_code == 202, response.get_json()
    with runtime.sessions() as session:
        stored = session.get(Job, response.get_json()["id"])
    assert stored is not None and stored.status in ("queued", "running", "succeeded")


def test_readyz_names_the_dependency_that_is_down(redis_down: Settings) -> None:
    client = create_app(redis_down.with_overrides(operator_token=OPERATOR)).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"] == {"database": True, "redis": False, "worker": False}
    assert response.headers["Retry-After"]
    # Why is the operator's to know: the reasons name internal hosts and ports.
    assert body["reasons"] == {"redis": "unavailable", "worker": "unavailable"}
    told = client.get("/readyz", headers={"Authorization": f"Bearer {OPERATOR}"}).get_json()
    assert NOTHING_LISTENS in told["reasons"]["redis"]


@pytest.mark.timeout(60)
def test_with_the_database_down_every_route_answers_503(
    settings: Settings, auth: dict[str, str]
) -> None:
    down = settings.with_overrides(
        database_url=f"postgresql+psycopg://postgres@{NOTHING_LISTENS}/vlmq"
    )
    client = create_app(down).test_client()
    body = {"image": data_url(shape_png()), "question": "is the database up?"}
    assert_503(client.post("/v1/jobs", json=body, headers=auth))
    assert_503(client.get("/v1/jobs", headers=auth))
    assert_503(client.get("/v1/batches", headers=auth))
    assert_503(client.post("/v1/chat/completions", json={"messages": []}, headers=auth))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"] is False
