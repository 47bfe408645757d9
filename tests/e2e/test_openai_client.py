"""The official `openai` client works against vlmq unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.support import data_url, finished_batch, shape_png

pytestmark = pytest.mark.usefixtures("worker")


def make_client(live_server: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=60)


def image_message(question: str) -> list[dict[str, object]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(shape_png("blue", "circle"))}},
                {"type": "text", "text": question},
            ],
        }
    ]


def test_chat_completion_with_the_openai_client(
    live_server: str, api_key: str, settings: object
) -> None:
    client = make_client(live_server, api_key)
    completion = client.chat.completions.create(
        model=settings.model_id,  # type: ignore[attr-defined]
        messages=image_message("what color is the shape?"),  # type: ignore[arg-type]
        max_tokens=4,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 4
    assert (
        completion.usage.total_tokens
        == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_models_list_with_the_openai_client(
    live_server: str, api_key: str, settings: object
) -> None:
    models = make_client(live_server, api_key).models.list()
    ids = [model.id for model in models.data]
    assert ids == [settings.model_id]  # type: ignore[attr-defined]
    assert models.data[0].model_extra["root"] == Path(settings.model).name  # type: ignore[attr-defined, index]


def test_openai_client_sees_errors_as_its_own_exceptions(live_server: str, api_key: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        make_client(live_server, "vlmq-wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        make_client(live_server, api_key).chat.completions.create(
            model="gpt-4o",
            messages=image_message("what?"),
            max_tokens=1,  # type: ignore[arg-type]
        )
    with pytest.raises(openai.UnprocessableEntityError):
        make_client(live_server, api_key).chat.completions.create(
            model="",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(b"not an image")}},
                        {"type": "text", "text": "what?"},
                    ],
                }
            ],
        )


def test_streaming_with_the_openai_client(live_server: str, api_key: str, settings: object) -> None:
    stream = make_client(live_server, api_key).chat.completions.create(
        model=settings.model_id,  # type: ignore[attr-defined]
        messages=image_message("what shape is in the image?"),  # type: ignore[arg-type]
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish and finish[-1] in ("stop", "length")
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 6
    # The streamed text is the answer the job recorded.
    whole = make_client(live_server, api_key).chat.completions.create(
        model=settings.model_id,  # type: ignore[attr-defined]
        messages=image_message("what shape is in the image?"),  # type: ignore[arg-type]
        max_tokens=6,
    )
    assert text == whole.choices[0].message.content


@pytest.mark.usefixtures("background_worker")
def test_batch_api_with_the_openai_client(live_server: str, api_key: str, tmp_path: Path) -> None:
    client = make_client(live_server, api_key)
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": image_message(question), "max_tokens": 3},
        }
        for i, question in enumerate(["what color is the shape?", "what shape is in the image?"])
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    file = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = finished_batch(client, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    assert batch.output_file_id is not None
    output = client.files.content(batch.output_file_id).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in output) == ["q0", "q1"]
