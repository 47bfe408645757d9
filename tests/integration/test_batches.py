"""Files and batches in the OpenAI shapes: expansion, progress, output and error files, priority."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from standardwebhooks import Webhook

from tests.support import data_url, shape_png, wait_until
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.usefixtures("worker", "background_worker")


def chat_line(
    custom_id: str, color: str, question: str = "what color is the shape?"
) -> dict[str, Any]:
    content = [
        {"type": "image_url", "image_url": {"url": data_url(shape_png(color))}},
        {"type": "text", "text": question},
    ]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def upload(client: FlaskClient, auth: dict[str, str], lines: list[Any]) -> dict[str, Any]:
    raw = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    response = client.post(
        "/v1/files",
        data={"purpose": "batch", "file": (io.BytesIO(raw.encode()), "input.jsonl")},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def finished_batch(
    client: FlaskClient, auth: dict[str, str], batch_id: str, timeout_s: float = 120
) -> dict[str, Any]:
    def poll() -> dict[str, Any] | None:
        batch = client.get(f"/v1/batches/{batch_id}", headers=auth).get_json()
        return batch if batch["status"] in ("completed", "failed", "cancelled", "expired") else None

    return wait_until(poll, timeout_s, f"batch {batch_id}", interval_s=0.3)


def content_lines(client: FlaskClient, auth: dict[str, str], file_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/files/{file_id}/content", headers=auth)
    assert response.status_code == 200
    return [json.loads(line) for line in response.data.decode().splitlines()]


def test_chat_batch_with_a_bad_line_that_fails_alone(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    lines = [
        chat_line("red-1", "red"),
        "{this is not json",
        chat_line("blue-2", "blue"),
        {
            **chat_line("bad-image", "red"),
            "body": {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url(b"not an image")}},
                            {"type": "text", "text": "what?"},
                        ],
                    }
                ]
            },
        },
        chat_line("green-3", "green"),
    ]
    file = upload(client, auth, lines)
    assert file["object"] == "file" and file["purpose"] == "batch" and file["bytes"] > 0
    assert client.get(f"/v1/files/{file['id']}", headers=auth).get_json()["id"] == file["id"]
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"run": "test"},
        },
        headers=auth,
    ).get_json()
    assert created["object"] == "batch" and created["status"] == "validating"
    batch = finished_batch(client, auth, created["id"])
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 5, "completed": 3, "failed": 2}
    assert batch["metadata"] == {"run": "test"}
    outputs = content_lines(client, auth, batch["output_file_id"])
    assert sorted(line["custom_id"] for line in outputs) == ["blue-2", "green-3", "red-1"]
    for line in outputs:
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["object"] == "chat.completion"
    errors = content_lines(client, auth, batch["error_file_id"])
    assert sorted(str(line["custom_id"]) for line in errors) == ["None", "bad-image"]
    # Each refused line carries the live endpoint's answer: its status and its error body.
    for line in errors:
        assert line["error"] is None and line["response"]["status_code"] in (400, 422)
        assert line["response"]["body"]["error"]["message"]


def test_moderation_batch(client: FlaskClient, auth: dict[str, str]) -> None:
    lines = [
        {
            "custom_id": f"img-{i}",
            "method": "POST",
            "url": "/v1/moderations",
            "body": {
                "input": [
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url(shape_png(color, "triangle"))},
                    }
                ],
                "categories": {"triangle": "is there a triangle?"},
            },
        }
        for i, color in enumerate(["red", "blue", "gray"])
    ]
    file = upload(client, auth, lines)
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file["id"], "endpoint": "/v1/moderations"},
        headers=auth,
    ).get_json()
    batch = finished_batch(client, auth, created["id"])
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    outputs = content_lines(client, auth, batch["output_file_id"])
    for line in outputs:
        result = line["response"]["body"]["results"][0]
        assert set(result["category_scores"]) == {"triangle"}
        assert isinstance(result["flagged"], bool)


def test_cancel_a_batch(client: FlaskClient, auth: dict[str, str]) -> None:
    lines = [
        {
            **chat_line(f"long-{i}", "red"),
            # Long, forced answers keep the batch running well past the cancel below.
            "body": {
                **chat_line("x", "red")["body"],
                "max_tokens": 400,
                "ignore_eos": True,
                "temperature": 1.0,
            },
        }
        for i in range(120)
    ]
    file = upload(client, auth, lines)
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"},
        headers=auth,
    ).get_json()
    wait_until(
        lambda: (
            client.get(f"/v1/batches/{created['id']}", headers=auth).get_json()["status"]
            == "in_progress"
        ),
        60,
        "in_progress",
        0.02,
    )
    cancelling = client.post(f"/v1/batches/{created['id']}/cancel", headers=auth)
    assert cancelling.status_code == 200
    assert cancelling.get_json()["status"] in ("cancelling", "finalizing", "cancelled")
    batch = finished_batch(client, auth, created["id"])
    assert batch["status"] == "cancelled"
    assert batch["request_counts"]["failed"] > 0, batch
    again = client.post(f"/v1/batches/{created['id']}/cancel", headers=auth)
    assert again.status_code == 409


def test_interactive_jobs_are_not_starved_by_a_batch(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    lines = [
        {
            **chat_line(f"bulk-{i}", "red"),
            "body": {**chat_line("x", "red")["body"], "max_tokens": 30, "temperature": 1.0},
        }
        for i in range(80)
    ]
    file = upload(client, auth, lines)
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"},
        headers=auth,
    ).get_json()
    wait_until(
        lambda: (
            client.get(f"/v1/batches/{created['id']}", headers=auth).get_json()["status"]
            == "in_progress"
        ),
        60,
        "in_progress",
        0.2,
    )
    started = time.monotonic()
    body = {
        "image": data_url(shape_png("teal")),
        "question": "what color?",
        "max_tokens": 2,
        "temperature": 1.0,
    }
    job = client.post("/v1/jobs", json=body, headers={**auth, "Prefer": "wait=60"}).get_json()
    interactive_s = time.monotonic() - started
    assert job["status"] == "succeeded"
    batch = client.get(f"/v1/batches/{created['id']}", headers=auth).get_json()
    # The interactive job finished while most of the batch was still waiting.
    assert batch["request_counts"]["completed"] < 60, (interactive_s, batch["request_counts"])
    client.post(f"/v1/batches/{created['id']}/cancel", headers=auth)
    finished_batch(client, auth, created["id"])


def test_batch_and_file_errors(
    client: FlaskClient, auth: dict[str, str], other_api_key: str
) -> None:
    file = upload(client, auth, [chat_line("a", "red")])
    other = {"Authorization": f"Bearer {other_api_key}"}
    assert client.get(f"/v1/files/{file['id']}", headers=other).status_code == 404
    assert client.get(f"/v1/files/{file['id']}/content", headers=other).status_code == 404
    bad = [
        {"input_file_id": file["id"], "endpoint": "/v1/embeddings"},
        {
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "1h",
        },
        {"endpoint": "/v1/chat/completions"},
    ]
    for body in bad:
        response = client.post("/v1/batches", json=body, headers=auth)
        assert response.status_code == 400, body
    assert (
        client.post(
            "/v1/batches",
            json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"},
            headers=other,
        ).status_code
        == 404
    )
    assert client.get("/v1/batches/batch_nope", headers=auth).status_code == 404
    listed = client.get("/v1/batches?limit=5", headers=auth).get_json()
    assert listed["object"] == "list"
    wrong_purpose = client.post(
        "/v1/files",
        data={"purpose": "fine-tune", "file": (io.BytesIO(b"{}"), "x.jsonl")},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert wrong_purpose.status_code == 400


def test_batch_idempotency_key_and_completion_webhook(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    receiver = WebhookReceiver()
    try:
        file = upload(client, auth, [chat_line("only", "yellow")])
        body = {
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "webhook": receiver.url("/batch-done"),
        }
        headers = {**auth, "Idempotency-Key": f"batch-{file['id']}"}
        first = client.post("/v1/batches", json=body, headers=headers)
        second = client.post("/v1/batches", json=body, headers=headers)
        assert first.get_json()["id"] == second.get_json()["id"]
        assert second.headers.get("Idempotent-Replayed") == "true"
        changed = client.post("/v1/batches", json={**body, "metadata": {"x": "y"}}, headers=headers)
        assert changed.status_code == 422
        batch = finished_batch(client, auth, first.get_json()["id"])
        (delivery,) = receiver.wait_for("/batch-done", 1)
        secret = client.get("/v1/webhooks/default/secret", headers=auth).get_json()["key"]
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert payload["id"] == batch["id"] and payload["status"] == "completed"
    finally:
        receiver.close()


def test_batch_lines_pick_presets_and_an_unknown_one_fails_alone(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    put = client.put(
        "/v1/presets/terse", json={"system_prompt": "answer with one word"}, headers=auth
    )
    assert put.status_code == 200, put.get_json()
    with_preset = chat_line("terse", "red")
    with_preset["body"]["preset"] = "terse"
    plain = chat_line("plain", "red")
    unknown = chat_line("unknown", "red")
    unknown["body"]["preset"] = "no-such-preset"
    file = upload(client, auth, [with_preset, plain, unknown])
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"},
        headers=auth,
    ).get_json()
    batch = finished_batch(client, auth, created["id"])
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}, batch
    outputs = {
        line["custom_id"]: line["response"]["body"]
        for line in content_lines(client, auth, batch["output_file_id"])
    }
    # The preset's words are part of the prompt the model read.
    assert outputs["terse"]["usage"]["prompt_tokens"] > outputs["plain"]["usage"]["prompt_tokens"]
    [error] = content_lines(client, auth, batch["error_file_id"])
    assert error["custom_id"] == "unknown" and error["response"]["status_code"] == 404
    assert error["response"]["body"]["error"]["code"] == "preset_not_found"
