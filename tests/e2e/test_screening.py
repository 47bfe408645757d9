"""The screening gate, on real processes: a tenant whose moderation policy screens has every
job's images scored before it is answered, and a flagged one is refused (`content_filter`)
on every path (jobs, synchronous chat, the Responses API, batch lines, each alone); another
tenant is never screened by that policy."""

from __future__ import annotations

import json
import secrets
from typing import Any

import requests
from flask.testing import FlaskClient

from services.core.config import Settings
from tests.e2e.responses_support import fresh_question, make_client
from tests.support import data_url, finished_batch, shape_png
from vlmq.cli import create_key

# The bundled model says "yes" to this of a red shape, and "no" of a blue one.
RED_POLICY = {"red_shape": {"question": "is there a red shape?", "threshold": 0.5}}


def screened_tenant(settings: Settings, policy: dict[str, Any], url: str) -> dict[str, str]:
    """A fresh tenant whose policy screens its jobs: its Authorization header."""
    auth = {
        "Authorization": f"Bearer {create_key(settings, f'screened-{secrets.token_hex(4)}', 't')}"
    }
    answer = requests.put(
        f"{url}/v1/moderations/policy",
        json={"categories": policy, "screen": True},
        headers=auth,
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["screen"] is True, answer.text
    return auth


def ask_job(url: str, auth: dict[str, str], color: str) -> dict[str, Any]:
    """A job about a circle of `color`, waited for."""
    answer = requests.post(
        f"{url}/v1/jobs",
        json={"image": data_url(shape_png(color)), "question": fresh_question()},
        headers={**auth, "Prefer": "wait=60"},
        timeout=90,
    )
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def test_a_screened_tenants_flagged_input_is_refused_and_others_are_answered(
    bundled: tuple[str, Settings], other_api_key: str
) -> None:
    url, settings = bundled
    auth = screened_tenant(settings, RED_POLICY, url)
    flagged = ask_job(url, auth, "red")
    passed = ask_job(url, auth, "blue")
    # Side by side: the red circle is refused, naming the category and its score; the blue
    # one is answered.
    assert flagged["status"] == "failed" and flagged["error"]["type"] == "content_filter"
    assert "red_shape" in flagged["error"]["message"] and flagged["output"] in (None, "")
    assert passed["status"] == "succeeded" and passed["output"] == "blue"
    # The refusal is in the tenant's audit log, beside the policy change.
    logged = requests.get(f"{url}/v1/audit_events", headers=auth, timeout=30).json()["data"]
    assert {"screening.refused", "moderation_policy.updated"} <= {e["action"] for e in logged}
    assert any(e["target"] == flagged["id"] for e in logged)
    # Another tenant is never screened by this policy.
    other = ask_job(url, {"Authorization": f"Bearer {other_api_key}"}, "red")
    assert other["status"] == "succeeded" and other["output"] == "red"

    chat = requests.post(
        f"{url}/v1/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(shape_png("red"))}},
                        {"type": "text", "text": fresh_question()},
                    ],
                }
            ]
        },
        headers=auth,
        timeout=90,
    )
    assert chat.status_code == 400 and chat.json()["error"]["code"] == "content_filter"

    client = make_client(url, auth["Authorization"].removeprefix("Bearer "))
    response = client.responses.create(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": data_url(shape_png("red"))},
                    {"type": "input_text", "text": fresh_question()},
                ],
            }
        ],
        background=True,
    )
    while response.status in ("queued", "in_progress"):
        response = client.responses.retrieve(response.id)
    assert response.status == "failed" and response.error is not None
    assert response.error.code == "image_content_policy_violation"
    assert "red_shape" in response.error.message

    # Screening off: the same input is answered.
    requests.put(
        f"{url}/v1/moderations/policy",
        json={"categories": RED_POLICY, "screen": False},
        headers=auth,
        timeout=30,
    )
    assert ask_job(url, auth, "red")["output"] == "red"


def test_a_flagged_batch_line_fails_alone(
    live_server: str, settings: Settings, worker: Any, background_worker: Any
) -> None:
    # Every image is flagged (threshold 0); a text-only line has nothing to screen.
    policy = {"anything": {"question": "is there a shape?", "threshold": 0.0}}
    auth = screened_tenant(settings, policy, live_server)
    client = make_client(live_server, auth["Authorization"].removeprefix("Bearer "))
    image = {"type": "image_url", "image_url": {"url": data_url(shape_png("red"))}}
    lines = [
        {
            "custom_id": name,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": content}], "max_tokens": 2},
        }
        for name, content in [
            ("image", [image, {"type": "text", "text": fresh_question()}]),
            ("text", fresh_question()),
        ]
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = client.files.create(file=("screened.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = finished_batch(client, batch.id)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    assert batch.error_file_id is not None and batch.output_file_id is not None
    (error,) = [
        json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()
    ]
    assert error["custom_id"] == "image" and "content_filter" in json.dumps(error)


def test_the_policy_says_whether_it_screens(client: FlaskClient, auth: dict[str, str]) -> None:
    answer = client.get("/v1/moderations/policy", headers=auth)
    assert answer.status_code == 200 and answer.get_json()["screen"] is False
