"""`/v1/moderations`: OpenAI's response shape, scores from the VLM's P("yes"), policies."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.core.config import Settings
from services.core.moderation.policy import MAX_CATEGORIES
from services.core.moderation.stored import policy_hash
from services.core.runtime import Runtime
from services.core.tables import Job, ScorePolicy
from tests.support import data_url, shape_png

pytestmark = pytest.mark.usefixtures("worker")


def image_input(color: str = "red", shape: str = "triangle") -> list[dict[str, object]]:
    return [{"type": "image_url", "image_url": {"url": data_url(shape_png(color, shape))}}]


def test_moderation_response_shape_with_request_categories(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = {
        "input": image_input(),
        "categories": {"triangle": "is there a triangle?", "red": "is the shape red?"},
        "thresholds": {"red": 0.0},
    }
    response = client.post("/v1/moderations", json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    moderation = response.get_json()
    assert moderation["id"].startswith("modr-") and moderation["model"]
    (result,) = moderation["results"]
    assert set(result["category_scores"]) == {"triangle", "red"}
    assert all(0.0 <= score <= 1.0 for score in result["category_scores"].values())
    # A threshold of 0 flags whatever the score.
    assert result["categories"]["red"] is True and result["flagged"] is True
    assert result["category_applied_input_types"] == {"triangle": ["image"], "red": ["image"]}


def test_scores_are_cached_like_answers(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"input": image_input("blue", "circle"), "categories": {"circle": "is there a circle?"}}
    first = client.post("/v1/moderations", json=body, headers=auth).get_json()
    second = client.post("/v1/moderations", json=body, headers=auth).get_json()
    assert first["results"] == second["results"]
    job_id = "job_" + second["id"].removeprefix("modr-")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["cache_hit"] is True


def test_text_inputs_get_one_result_each(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"input": ["first text", "second text"], "categories": {"red": "is it red?"}}
    moderation = client.post("/v1/moderations", json=body, headers=auth).get_json()
    assert len(moderation["results"]) == 2
    assert moderation["results"][0]["category_applied_input_types"] == {"red": ["text"]}


def test_default_and_tenant_policies(client: FlaskClient, other_api_key: str) -> None:
    headers = {"Authorization": f"Bearer {other_api_key}"}
    default = client.post("/v1/moderations", json={"input": image_input()}, headers=headers)
    assert set(default.get_json()["results"][0]["categories"]) == {"triangle"}
    policy = {"categories": {"green": {"question": "is the shape green?", "threshold": 0.9}}}
    assert client.put("/v1/moderations/policy", json=policy, headers=headers).status_code == 200
    assert client.get("/v1/moderations/policy", headers=headers).get_json()["categories"] == {
        "green": {"question": "is the shape green?", "threshold": 0.9}
    }
    tenant = client.post("/v1/moderations", json={"input": image_input()}, headers=headers)
    assert set(tenant.get_json()["results"][0]["categories"]) == {"green"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"input": []},
        {"input": image_input(), "categories": {}},
        {"input": image_input(), "categories": {"x": ""}},
        {"input": image_input(), "categories": {"x": "q?"}, "thresholds": {"x": 2}},
        {"input": image_input(), "categories": {"x": "q?"}, "thresholds": {"y": 0.5}},
        {"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ],
)
def test_bad_moderation_requests_are_4xx(
    client: FlaskClient, auth: dict[str, str], body: dict[str, object]
) -> None:
    response = client.post("/v1/moderations", json=body, headers=auth)
    assert 400 <= response.status_code < 500
    assert set(response.get_json()["error"]) == {"type", "code", "message", "param"}


def test_inputs_per_request_are_capped(
    client: FlaskClient, auth: dict[str, str], settings: Settings
) -> None:
    cap = settings.max_moderation_inputs
    response = client.post(
        "/v1/moderations", json={"input": ["is this fine?"] * (cap + 1)}, headers=auth
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "input" and str(cap) in error["message"]


def test_policy_sizes_are_bounded(
    client: FlaskClient, auth: dict[str, str], settings: Settings
) -> None:
    too_long = "is it red? " * (settings.max_question_chars // 10)
    half = "x" * (settings.max_policy_chars // 2)
    refused = {
        "question": {"red": too_long},
        "policy": {"a": half, "b": half, "c": "and one more?"},
        "name": {"n" * 65: "is it red?"},
    }
    for what, categories in refused.items():
        for method, path, body in [
            ("put", "/v1/moderations/policy", {"categories": categories}),
            ("post", "/v1/moderations", {"input": "text", "categories": categories}),
        ]:
            response = getattr(client, method)(path, json=body, headers=auth)
            assert response.status_code == 400, (what, path, response.get_json())
            assert response.get_json()["error"]["code"] == "invalid_request", what


def test_a_policy_is_stored_once_not_copied_into_every_job(
    client: FlaskClient, auth: dict[str, str], settings: Settings, runtime: Runtime
) -> None:
    # The largest policy allowed, over as many inputs as one request may carry.
    size = settings.max_policy_chars // MAX_CATEGORIES - 20
    categories = {f"c{n}": f"is it number {n}? " + "q" * size for n in range(MAX_CATEGORIES)}
    inputs = [f"text {n}" for n in range(settings.max_moderation_inputs)]
    response = client.post(
        "/v1/moderations", json={"input": inputs, "categories": categories}, headers=auth
    )
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert len(results) == len(inputs) and all(len(r["categories"]) == 32 for r in results)
    questions = {name: question.strip() for name, question in categories.items()}
    with runtime.sessions() as session:
        params = session.scalars(
            sa.select(Job.params).where(Job.kind == "moderation").order_by(Job.created_at.desc())
        ).all()[: len(inputs)]
        sha = params[0]["score_policy"]
        stored = session.get(ScorePolicy, sha)
    assert stored is not None and stored.questions == questions
    assert sha == policy_hash(stored.questions)
    # Each job names the policy: a few hundred bytes, not the policy's 16,000 characters.
    assert all(p["score_policy"] == sha and p["score_questions"] is None for p in params)
    assert max(len(json.dumps(p)) for p in params) < 1_000
