"""Submit, poll, list and cancel over the API, answered by a real worker on the tiny GLM-4V."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support import data_url, shape_png, wait_until

pytestmark = pytest.mark.usefixtures("worker")


def wait_for_terminal(
    client: FlaskClient, auth: dict[str, str], job_id: str, timeout_s: float = 60
) -> dict[str, Any]:
    """Poll a job until it is terminal."""

    def poll() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_until(poll, timeout_s, f"job {job_id}")


def test_shorthand_job_is_answered_by_the_worker(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "image": data_url(shape_png("blue")),
            "question": "what color is the shape?",
            "max_tokens": 4,
        },
        headers=auth,
    )
    assert response.status_code == 202
    job = response.get_json()
    assert job["object"] == "job" and job["status"] == "queued" and job["id"].startswith("job_")
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["urls"] == {"get": f"/v1/jobs/{job['id']}", "cancel": f"/v1/jobs/{job['id']}/cancel"}
    done = wait_for_terminal(client, auth, job["id"])
    assert done["status"] == "succeeded", done
    assert isinstance(done["output"], str)
    assert done["attempts"] == 1 and done["cache_hit"] is False
    assert done["result"]["usage"]["completion_tokens"] <= 4
    metrics = done["metrics"]
    assert metrics["inference_ms"] > 0 and metrics["total_ms"] >= metrics["inference_ms"]
    assert done["started_at"] and done["completed_at"]
    assert "<|" not in done["output"]


def test_openai_messages_job(client: FlaskClient, auth: dict[str, str]) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": data_url(shape_png("green", "triangle"))},
                },
                {"type": "text", "text": "what shape is in the image?"},
            ],
        }
    ]
    response = client.post("/v1/jobs", json={"messages": messages, "max_tokens": 3}, headers=auth)
    assert response.status_code == 202
    assert wait_for_terminal(client, auth, response.get_json()["id"])["status"] == "succeeded"


def test_multipart_upload_job(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(shape_png("red", "rectangle")), "shape.png"),
            "question": "is there a rectangle?",
            "max_tokens": "3",
        },
        headers=auth,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    job = wait_for_terminal(client, auth, response.get_json()["id"])
    assert job["status"] == "succeeded"
    assert job["result"]["usage"]["completion_tokens"] <= 3


def test_prefer_wait_returns_the_finished_job(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/jobs",
        json={"image": data_url(shape_png("teal")), "question": "what color?", "max_tokens": 2},
        headers={**auth, "Prefer": "wait=30"},
    )
    assert response.status_code == 202
    assert response.get_json()["status"] == "succeeded"


def test_generation_parameters_are_honoured(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"image": data_url(shape_png("gray")), "question": "what color?", "max_tokens": 5}
    job = client.post("/v1/jobs", json=body, headers={**auth, "Prefer": "wait=30"}).get_json()
    assert job["result"]["usage"]["completion_tokens"] <= 5
    sampled = {**body, "temperature": 0.8, "top_p": 0.9, "seed": 7, "stop": ["\n"]}
    job = client.post("/v1/jobs", json=sampled, headers={**auth, "Prefer": "wait=30"}).get_json()
    assert job["status"] == "succeeded"
    bad = client.post("/v1/jobs", json={**body, "temperature": 5}, headers=auth)
    assert bad.status_code == 400 and bad.get_json()["error"]["param"] == "temperature"


def test_list_jobs_paginates_with_a_cursor_and_filters_by_status(
    client: FlaskClient, other_api_key: str
) -> None:
    # Another tenant than the other tests use, so their jobs do not interleave.
    headers = {"Authorization": f"Bearer {other_api_key}"}
    ids = []
    for color in ("red", "green", "blue"):
        body = {"image": data_url(shape_png(color)), "question": "what color?", "max_tokens": 1}
        ids.append(
            client.post("/v1/jobs", json=body, headers={**headers, "Prefer": "wait=30"}).get_json()[
                "id"
            ]
        )
    first = client.get("/v1/jobs?limit=2", headers=headers).get_json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [job["id"] for job in first["data"]] == ids[::-1][:2]
    second = client.get(
        f"/v1/jobs?limit=2&after={first['next_cursor']}", headers=headers
    ).get_json()
    assert ids[0] in [job["id"] for job in second["data"]]
    succeeded = client.get("/v1/jobs?status=succeeded&limit=100", headers=headers).get_json()
    assert set(ids) <= {job["id"] for job in succeeded["data"]}
    assert client.get("/v1/jobs?status=bogus", headers=headers).status_code == 400


def test_cancel_a_job_before_it_finishes(client: FlaskClient, auth: dict[str, str]) -> None:
    # Sampling without a seed is never cached, and 300 tokens keep the job busy a while.
    busy = {
        "image": data_url(shape_png("red")),
        "question": "what?",
        "max_tokens": 300,
        "temperature": 1.0,
    }
    job = client.post("/v1/jobs", json=busy, headers=auth).get_json()
    canceled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert canceled.status_code == 200
    assert canceled.get_json()["status"] == "canceled"
    # Terminal states are final: the worker's answer, when it comes, is thrown away.
    follower = client.post(
        "/v1/jobs", json={**busy, "max_tokens": 1}, headers={**auth, "Prefer": "wait=60"}
    )
    assert follower.get_json()["status"] == "succeeded"
    time.sleep(2)  # a gap for the worker's late answer, if it were recorded, to land
    final = client.get(f"/v1/jobs/{job['id']}", headers=auth).get_json()
    assert final["status"] == "canceled" and final["output"] is None
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 200 and again.get_json()["status"] == "canceled"


def test_another_tenants_job_is_404(
    client: FlaskClient, auth: dict[str, str], other_api_key: str
) -> None:
    body = {"image": data_url(shape_png("brown")), "question": "what color?", "max_tokens": 1}
    job = client.post("/v1/jobs", json=body, headers=auth).get_json()
    other = {"Authorization": f"Bearer {other_api_key}"}
    for response in (
        client.get(f"/v1/jobs/{job['id']}", headers=other),
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=other),
        client.get(f"/v1/jobs?after={job['id']}", headers=other),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer vlmq-wrong"}, {"Authorization": "Basic abc"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_missing_or_wrong_key_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["type"] == "authentication_error"


def test_models_lists_the_served_model_with_its_root(
    client: FlaskClient, auth: dict[str, str], settings: Any
) -> None:
    models = client.get("/v1/models", headers=auth).get_json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == settings.model_id
    assert models["data"][0]["root"] == Path(settings.model).name  # the folder, not its path


def test_unknown_model_is_404(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"model": "gpt-4o", "image": data_url(shape_png()), "question": "what?"}
    response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "model_not_found"


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": True, "redis": True, "worker": True}
    assert client.get("/metrics").status_code == 200
    assert b"vlmq playground" in client.get("/").data
