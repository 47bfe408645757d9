"""A batch line accepts exactly what its live endpoint accepts, and fails the way it refuses.

Each case is sent twice: to the live endpoint, and as a line of one batch. A case the
endpoint answers `200` must be in the batch's output file; a case it refuses must be in the
error file with the same status and the same error code and parameter.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from services.core.requests.chat import UNSUPPORTED_FIELDS
from tests.integration.test_batches import content_lines, finished_batch, upload
from tests.support import data_url, shape_png

pytestmark = pytest.mark.usefixtures("worker", "background_worker")

CHAT = "/v1/chat/completions"
MODERATIONS = "/v1/moderations"
IMAGE = {"type": "image_url", "image_url": {"url": data_url(shape_png("red"))}}
CHAT_BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "color?"}]}],
    "max_tokens": 2,
}
MODERATION_BODY: dict[str, Any] = {
    "input": [IMAGE],
    "categories": {"circle": "is there a circle?"},
}

# A value of each OpenAI field vlmq does not implement that asks for the feature.
ASKING: dict[str, Any] = {
    "tools": [{"type": "function", "function": {"name": "lookup"}}],
    "tool_choice": "required",
    "functions": [{"name": "lookup"}],
    "function_call": {"name": "lookup"},
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"42": 3},
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "red"},
    "web_search_options": {"search_context_size": "low"},
    "store": True,
    "metadata": {"team": "billing"},
    "reasoning_effort": "high",
    "verbosity": "low",
    "best_of": 2,
    "use_beam_search": True,
}
# A value of each that asks for nothing, as clients send by default.
NOT_ASKING: dict[str, Any] = {
    "tools": [],
    "tool_choice": "none",
    "functions": None,
    "function_call": "auto",
    "presence_penalty": 0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
    "audio": None,
    "modalities": ["text"],
    "prediction": None,
    "web_search_options": None,
    "store": False,
    "metadata": None,
    "reasoning_effort": None,
    "verbosity": None,
    "best_of": 1,
    "use_beam_search": False,
}

CHAT_CASES: dict[str, dict[str, Any]] = {
    "plain": CHAT_BODY,
    **{f"asks-{name}": {**CHAT_BODY, name: value} for name, value in ASKING.items()},
    **{f"default-{name}": {**CHAT_BODY, name: value} for name, value in NOT_ASKING.items()},
    "unknown-field-ignored": {**CHAT_BODY, "user": "someone", "x_trace": 1},
    "temperature-ok": {**CHAT_BODY, "temperature": 0.7, "top_p": 0.9, "seed": 3},
    "temperature-negative": {**CHAT_BODY, "temperature": -1},
    "top_p-over-one": {**CHAT_BODY, "top_p": 1.5},
    "max_tokens-zero": {**CHAT_BODY, "max_tokens": 0},
    "max_tokens-huge": {**CHAT_BODY, "max_tokens": 10**9},
    "no-messages": {"max_tokens": 2},
    "messages-empty": {**CHAT_BODY, "messages": []},
    "bad-role": {**CHAT_BODY, "messages": [{"role": "robot", "content": "hi"}]},
    "image-not-an-image": {
        **CHAT_BODY,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": data_url(b"nope")}}],
            }
        ],
    },
    "unknown-model": {**CHAT_BODY, "model": "no-such-model"},
    "unknown-preset": {**CHAT_BODY, "preset": "no-such-preset"},
    "stop-ok": {**CHAT_BODY, "stop": ["."]},
    "response_format-text": {**CHAT_BODY, "response_format": {"type": "text"}},
    "json_object": {**CHAT_BODY, "response_format": {"type": "json_object"}},
    "json_schema-bad": {
        **CHAT_BODY,
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 7}}},
    },
    "guided_choice-ok": {**CHAT_BODY, "guided_choice": ["red", "blue"]},
    "guided_regex-bad": {**CHAT_BODY, "guided_regex": "(open"},
    "service_tier-flex": {**CHAT_BODY, "service_tier": "flex"},
    "service_tier-unknown": {**CHAT_BODY, "service_tier": "scale"},
    "priority-ok": {**CHAT_BODY, "priority": -3},
    "max_queue_ms-ok": {**CHAT_BODY, "max_queue_ms": 600_000},
    "max_queue_ms-zero": {**CHAT_BODY, "max_queue_ms": 0},
}
MODERATION_CASES: dict[str, dict[str, Any]] = {
    "plain": MODERATION_BODY,
    "threshold-ok": {**MODERATION_BODY, "thresholds": {"circle": 0.8}},
    "threshold-out-of-range": {**MODERATION_BODY, "thresholds": {"circle": 7}},
    "threshold-unknown-category": {**MODERATION_BODY, "thresholds": {"square": 0.5}},
    "no-input": {"categories": MODERATION_BODY["categories"]},
    "input-not-a-list-of-parts": {**MODERATION_BODY, "input": 42},
    "categories-empty-question": {**MODERATION_BODY, "categories": {"circle": ""}},
    "unknown-model": {**MODERATION_BODY, "model": "no-such-model"},
}


def live_outcome(client: FlaskClient, auth: dict[str, str], endpoint: str, body: Any) -> Any:
    """(status, error code, error param) of the live endpoint's answer."""
    response = client.post(endpoint, json=body, headers=auth)
    if response.status_code == 200:
        return (200, None, None)
    error = response.get_json()["error"]
    return (response.status_code, error["code"], error["param"])


def batch_outcomes(
    client: FlaskClient, auth: dict[str, str], endpoint: str, cases: dict[str, Any]
) -> dict[str, Any]:
    """(status, error code, error param) of each case run as a line of one batch."""
    lines = [
        {"custom_id": name, "method": "POST", "url": endpoint, "body": body}
        for name, body in cases.items()
    ]
    file = upload(client, auth, lines)
    created = client.post(
        "/v1/batches", json={"input_file_id": file["id"], "endpoint": endpoint}, headers=auth
    ).get_json()
    batch = finished_batch(client, auth, created["id"])
    assert batch["status"] == "completed", batch
    outcomes: dict[str, Any] = {}
    for key in ("output_file_id", "error_file_id"):
        for line in content_lines(client, auth, batch[key]) if batch[key] else []:
            assert line["error"] is None, line  # every case got an answer or a refusal
            response = line["response"]
            if response["status_code"] == 200:
                outcomes[line["custom_id"]] = (200, None, None)
            else:
                error = response["body"]["error"]
                outcomes[line["custom_id"]] = (
                    response["status_code"],
                    error["code"],
                    error["param"],
                )
    return outcomes


def test_every_unsupported_field_is_in_the_table() -> None:
    assert set(ASKING) == set(UNSUPPORTED_FIELDS) == set(NOT_ASKING)


@pytest.mark.parametrize(
    ("endpoint", "cases"),
    [(CHAT, CHAT_CASES), (MODERATIONS, MODERATION_CASES)],
    ids=["chat", "moderations"],
)
def test_a_batch_line_gets_what_the_live_endpoint_answers(
    client: FlaskClient, auth: dict[str, str], endpoint: str, cases: dict[str, Any]
) -> None:
    live = {name: live_outcome(client, auth, endpoint, body) for name, body in cases.items()}
    # The table holds both sides: values the endpoint takes and values it refuses.
    assert any(status == 200 for status, _, _ in live.values())
    assert any(status == 400 for status, _, _ in live.values())
    assert batch_outcomes(client, auth, endpoint, cases) == live
    if endpoint == CHAT:
        for name in ASKING:
            assert live[f"asks-{name}"] == (400, "unsupported_parameter", name)
            assert live[f"default-{name}"] == (200, None, None)


@pytest.mark.parametrize(("field", "value"), [("n", 2), ("stream", True)], ids=["n", "stream"])
def test_a_batch_line_refuses_what_has_no_line_shape(
    client: FlaskClient, auth: dict[str, str], field: str, value: Any
) -> None:
    """A line gets one answer in one output line: several choices or a stream are refused
    with `400` naming the field (the live endpoint serves them)."""
    outcomes = batch_outcomes(client, auth, CHAT, {field: {**CHAT_BODY, field: value}})
    assert outcomes == {field: (400, "unsupported_parameter", field)}
