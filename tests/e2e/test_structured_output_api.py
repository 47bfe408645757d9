"""Structured output through the public API with the official `openai` client: `parse()`
works unchanged, a batch mixing schemas and plain lines answers every constrained line
validly in shared model calls, and what cannot be constrained is refused before it is
queued. The batch runs on the suite's main stack (its tiny model spells any JSON); the
answers whose fields must be right run on the bundled model's own stack."""

from __future__ import annotations

import json
import statistics
from typing import Any, Literal

import jsonschema_rs
import openai
import pytest
import requests
from pydantic import BaseModel

from services.core.config import Settings
from tests.e2e.responses_support import fresh_question, make_client
from tests.support import data_url, finished_batch, shape_png


class Shape(BaseModel):
    """What the bundled model reads off an easy-VQA image."""

    color: Literal["black", "blue", "brown", "gray", "green", "red", "teal", "yellow"]
    shape: Literal["circle", "rectangle", "triangle"]


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": ["red", "green", "blue"]},
            "shape": {"type": "string", "enum": ["circle", "triangle"]},
        },
        "required": ["color", "shape"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"present": {"type": "boolean"}},
        "required": ["present"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "shape": {"type": "string", "enum": ["circle", "rectangle"]},
            "sure": {"type": "boolean"},
        },
        "required": ["shape", "sure"],
        "additionalProperties": False,
    },
]


def image_message(question: str, color: str = "red") -> list[dict[str, Any]]:
    """One user message: a circle of `color` and the question."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(shape_png(color))}},
                {"type": "text", "text": question},
            ],
        }
    ]


def batch_line(index: int) -> dict[str, Any]:
    """Line `index` of the mixed batch: one of the three schemas, or (every fourth) plain."""
    body: dict[str, Any] = {
        "messages": image_message(fresh_question()),
        "max_tokens": 64,
    }
    if index % 4 < 3:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": f"s{index % 4}", "schema": SCHEMAS[index % 4], "strict": True},
        }
    return {
        "custom_id": f"line-{index}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    }


@pytest.mark.usefixtures("worker", "background_worker")
def test_a_batch_mixing_three_schemas_and_plain_lines_is_valid_in_shared_calls(
    live_server: str, api_key: str
) -> None:
    client = make_client(live_server, api_key)
    content = "".join(json.dumps(batch_line(index)) + "\n" for index in range(1000)).encode()
    file = client.files.create(file=("mixed.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = finished_batch(client, batch.id, timeout_s=300)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 1000 and batch.output_file_id is not None
    validators = [jsonschema_rs.validator_for(schema) for schema in SCHEMAS]
    sizes = []
    for raw in client.files.content(batch.output_file_id).text.splitlines():
        line = json.loads(raw)
        index = int(line["custom_id"].removeprefix("line-"))
        body = line["response"]["body"]
        sizes.append(body["vlmq"]["metrics"]["batch_size"])
        if index % 4 == 3:
            continue
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop", line
        assert validators[index % 4].is_valid(json.loads(choice["message"]["content"])), line
    assert len(sizes) == 1000
    # Constrained and plain lines, under different schemas, ran in shared model calls.
    assert statistics.median(sizes) > 1


@pytest.mark.usefixtures("worker")
def test_what_cannot_be_constrained_is_refused_before_it_is_queued(
    live_server: str, api_key: str
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    bad_schema = {"type": "object", "properties": {"a": {"$ref": "#/missing"}}}
    for body, param in [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": bad_schema}}},
            "response_format.schema",
        ),
        ({"guided_regex": "(open"}, "guided_regex"),
        ({"guided_json": {"type": "object"}, "guided_choice": ["a"]}, "guided_choice"),
    ]:
        answer = requests.post(
            f"{live_server}/v1/chat/completions",
            json={"messages": image_message(fresh_question()), **body},
            headers=auth,
            timeout=30,
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param


@pytest.mark.parametrize(("color", "shape"), [("red", "circle"), ("teal", "triangle")])
def test_the_openai_clients_parse_reads_the_bundled_models_fields(
    bundled: tuple[str, Settings], api_key: str, color: str, shape: str
) -> None:
    url, settings = bundled
    client = make_client(url, api_key)
    image = data_url(shape_png(color, shape))
    question = [
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "text", "text": "what color is the shape?"},
    ]
    completion = client.chat.completions.parse(
        model=settings.model_id,
        messages=[{"role": "user", "content": question}],  # type: ignore[list-item]
        response_format=Shape,
        temperature=0,
    )
    assert completion.choices[0].message.parsed == Shape(color=color, shape=shape)  # type: ignore[arg-type]
    response = client.responses.parse(
        model=settings.model_id,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": image, "detail": "auto"},
                    {"type": "input_text", "text": "what shape is in the image?"},
                ],
            }
        ],
        text_format=Shape,
    )
    assert response.output_parsed == Shape(color=color, shape=shape)  # type: ignore[arg-type]


def test_a_json_answer_cut_short_finishes_with_length(
    bundled: tuple[str, Settings], api_key: str
) -> None:
    url, settings = bundled
    client = make_client(url, api_key)
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model=settings.model_id,
            messages=image_message(fresh_question()),  # type: ignore[arg-type]
            response_format=Shape,
            max_tokens=3,
        )


@pytest.mark.usefixtures("worker")
def test_a_job_asks_for_a_choice_or_an_expression(live_server: str, api_key: str) -> None:
    auth = {"Authorization": f"Bearer {api_key}", "Prefer": "wait=30"}
    image = data_url(shape_png("blue"))
    for extra, check in [
        ({"guided_choice": ["left", "right"]}, lambda answer: answer in ("left", "right")),
        ({"guided_regex": "[0-9]{4}"}, lambda answer: len(answer) == 4 and answer.isdigit()),
    ]:
        job = requests.post(
            f"{live_server}/v1/jobs",
            json={"image": image, "question": fresh_question(), **extra},
            headers=auth,
            timeout=60,
        ).json()
        assert job["status"] == "succeeded", job
        assert check(job["output"]), job
