"""Batched inference, single-flight and token streaming, through real worker processes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.fake_stack import FakeStack, job, terminal
from tests.support import data_url, shape_png


def chat_body(image: bytes, question: str, **extra: Any) -> dict[str, Any]:
    content = [
        {"type": "image_url", "image_url": {"url": data_url(image)}},
        {"type": "text", "text": question},
    ]
    return {"messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.usefixtures("worker")
def test_concurrent_jobs_are_batched_and_answer_as_one_at_a_time(
    client: FlaskClient, auth: dict[str, str], other_api_key: str
) -> None:
    colors = ["red", "green", "blue", "teal", "gray", "brown", "yellow", "black"]
    bodies = [
        {
            "image": data_url(shape_png(color, "triangle")),
            "question": "what shape?",
            "max_tokens": 5,
        }
        for color in colors
    ]

    def submit(body: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/v1/jobs", json=body, headers={**auth, "Prefer": "wait=60"})
        return dict(response.get_json())

    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(submit, bodies))
    assert all(j["status"] == "succeeded" and not j["cache_hit"] for j in together), together
    assert max(j["metrics"]["batch_size"] for j in together) > 1
    # The same requests one at a time, as another tenant (so the cache cannot answer them).
    other = {"Authorization": f"Bearer {other_api_key}", "Prefer": "wait=60"}
    alone = [client.post("/v1/jobs", json=body, headers=other).get_json() for body in bodies]
    assert [j["output"] for j in together] == [j["output"] for j in alone]
    assert [j["result"]["usage"] for j in together] == [j["result"]["usage"] for j in alone]


@pytest.mark.fake_backend("SlowFakeBackend")
def test_twenty_identical_requests_make_one_model_call(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="1")
    body = {"image": data_url(shape_png("red")), "question": "same question"}

    def submit(_: int) -> str:
        response = fake_stack.client.post("/v1/jobs", json=body, headers=auth)
        return str(response.get_json()["id"])

    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(submit, range(20)))
    jobs = [terminal(fake_stack, auth, job_id) for job_id in ids]
    assert all(j["status"] == "succeeded" and j["output"] == "echo: same question" for j in jobs)
    assert fake_stack.calls("start") == 1
    assert sum(1 for j in jobs if not j["cache_hit"]) == 1


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_stream_sends_the_first_chunk_before_the_job_completes(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.5")
    body = chat_body(
        shape_png("blue"), "count", stream=True, stream_options={"include_usage": True}
    )
    response = fake_stack.client.post(
        "/v1/chat/completions", json=body, headers=auth, buffered=False
    )
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events: list[str] = []
    status_at_first_words = None
    for piece in response.iter_encoded():
        for line in piece.decode().splitlines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            chunk = json.loads(line[6:]) if line[6:] != "[DONE]" else {"choices": []}
            has_words = chunk["choices"] and chunk["choices"][0]["delta"].get("content")
            if has_words and status_at_first_words is None:
                job_id = "job_" + chunk["id"].removeprefix("chatcmpl-")
                status_at_first_words = job(fake_stack, auth, job_id)["status"]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(data) for data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(filter(None, contents)) == "one two three four"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    # The words come 0.5 s apart: the job is still running when the first one arrives.
    assert status_at_first_words == "running"
