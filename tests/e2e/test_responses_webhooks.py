"""The Responses API's batches and webhook endpoints with the official `openai` client
(strict validation), on the suite's main stack: its real worker and background worker
(batch expansion and webhook deliveries run there, under the main stack's settings)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e.responses_support import fresh_question, image_input, make_client
from tests.support import finished_batch, wait_until

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.usefixtures("background_worker")
def test_a_batch_of_responses_answers_each_line_with_a_response_object(
    live_server: str, api_key: str, settings: Any
) -> None:
    client = make_client(live_server, api_key)
    lines = [
        {
            "custom_id": f"r{index}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"input": image_input(question), "max_output_tokens": 3},
        }
        for index, question in enumerate([fresh_question(), fresh_question()])
    ]
    lines.append(
        {
            "custom_id": "bad",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"input": "hello", "background": True},
        }
    )
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = client.files.create(file=("responses.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/responses", completion_window="24h"
    )
    batch = finished_batch(client, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    assert batch.output_file_id is not None and batch.error_file_id is not None
    output = [
        json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()
    ]
    assert sorted(line["custom_id"] for line in output) == ["r0", "r1"]
    for line in output:
        body = openai.types.responses.Response.model_validate(line["response"]["body"])
        assert body.object == "response" and body.status in ("completed", "incomplete")
        # Each line's response can be retrieved like any other, and goes with its batch.
        assert client.responses.retrieve(body.id).output_text == body.output_text
        with pytest.raises(openai.ConflictError):
            client.responses.delete(body.id)
    [error] = [
        json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()
    ]
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400


def create_endpoint(live_server: str, key: str, url: str, events: list[str]) -> dict[str, Any]:
    """An endpoint made as Stripe's API spells it (`enabled_events`)."""
    return make_client(live_server, key).post(
        "/webhook_endpoints", body={"url": url, "enabled_events": events}, cast_to=dict
    )


@pytest.mark.usefixtures("background_worker")
def test_webhook_endpoints_receive_openais_thin_events_signed_with_their_own_secret(
    live_server: str, api_key: str, other_api_key: str, settings: Any, receiver: Any
) -> None:
    client = make_client(live_server, api_key)
    responses_hook = create_endpoint(
        live_server,
        api_key,
        receiver.url("/responses"),
        ["response.completed", "response.incomplete"],
    )
    batches_hook = create_endpoint(
        live_server, api_key, receiver.url("/batches"), ["batch.completed", "batch.failed"]
    )
    assert responses_hook["object"] == "webhook_endpoint"
    assert responses_hook["status"] == "enabled"
    assert responses_hook["secret"].startswith("whsec_")
    assert responses_hook["secret"] != batches_hook["secret"]
    # The secret is shown once: never in a read or a list.
    listed = client.get("/webhook_endpoints", cast_to=dict)
    assert {e["id"] for e in listed["data"]} >= {responses_hook["id"], batches_hook["id"]}
    assert all("secret" not in e for e in listed["data"])
    read = client.get(f"/webhook_endpoints/{responses_hook['id']}", cast_to=dict)
    assert read["enabled_events"] == ["response.completed", "response.incomplete"]
    assert "secret" not in read and "signing_secret" not in read
    # The first delivery fails: the retry carries the same webhook-id.
    receiver.script("/responses", 500)

    created = client.responses.create(
        model=settings.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=3,
        background=True,
    )
    first, second = receiver.wait_for("/responses", 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    event = client.webhooks.unwrap(second.body, second.headers, secret=responses_hook["secret"])
    done = client.responses.retrieve(created.id)
    assert event.type == f"response.{done.status}"
    assert event.object == "event" and event.id.startswith("evt_")
    assert event.data.id == created.id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(second.body, second.headers, secret=batches_hook["secret"])

    lines = [
        {
            "custom_id": "b0",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"input": image_input(fresh_question()), "max_output_tokens": 2},
        }
    ]
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = client.files.create(file=("b.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/responses", completion_window="24h"
    )
    [delivered] = receiver.wait_for("/batches", 1, timeout_s=120)
    batch_event = client.webhooks.unwrap(
        delivered.body, delivered.headers, secret=batches_hook["secret"]
    )
    assert batch_event.type == "batch.completed" and batch_event.data.id == batch.id
    # The batch's line is a response, but its events are the batch's: one response event.
    assert len(receiver.requests("/responses")) == 2

    # Another tenant sees none of them; a deleted endpoint gets nothing more.
    other = make_client(live_server, other_api_key)
    with pytest.raises(openai.NotFoundError):
        other.get(f"/webhook_endpoints/{responses_hook['id']}", cast_to=dict)
    with pytest.raises(openai.NotFoundError):
        other.delete(f"/webhook_endpoints/{responses_hook['id']}", cast_to=dict)
    client.webhooks.delete(responses_hook["id"])
    client.webhooks.delete(batches_hook["id"])
    again = client.responses.create(
        model=settings.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=2,
        background=True,
    )
    wait_until(
        lambda: client.responses.retrieve(again.id).status in ("completed", "incomplete"),
        30,
        "the second response",
    )
    assert len(receiver.requests("/responses")) == 2


def test_a_webhook_endpoint_is_checked_before_it_is_stored(
    live_server: str, api_key: str, receiver: Any
) -> None:
    client = make_client(live_server, api_key)
    for body in (
        {"url": receiver.url("/x"), "enabled_events": ["response.exploded"]},
        {"url": receiver.url("/x"), "enabled_events": []},
        {"url": "ftp://example.invalid/x", "enabled_events": ["response.completed"]},
    ):
        with pytest.raises(openai.BadRequestError):
            client.post("/webhook_endpoints", body=body, cast_to=dict)


def test_openais_client_manages_webhook_endpoints(
    live_server: str, api_key: str, receiver: Any
) -> None:
    client = make_client(live_server, api_key)
    made = client.webhooks.create(
        url=receiver.url("/sdk"), event_types=["response.completed"], name="orders"
    )
    assert made.signing_secret.startswith("whsec_") and made.name == "orders"
    assert made.event_types == ["response.completed"]
    read = client.webhooks.retrieve(made.id)
    assert read.url == receiver.url("/sdk") and read.created_at == made.created_at
    assert made.id in [endpoint.id for endpoint in client.webhooks.list()]
    deleted = client.webhooks.delete(made.id)
    assert deleted.deleted and deleted.object == "webhook_endpoint.deleted"
    with pytest.raises(openai.NotFoundError):
        client.webhooks.retrieve(made.id)
