"""`/v1/moderations`: OpenAI's response shape, scores from the VLM's P("yes"), policies."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from services.core.config import Settings
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
