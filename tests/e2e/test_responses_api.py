"""The official `openai` client's Responses API calls work against vlmq unchanged, with
strict validation of every response object and event, served by a real worker running the
bundled model (its own stack: the API on a real port, the suite's database and Redis).
Batches and webhook endpoints are in `test_responses_webhooks.py`: they need the background
worker of the suite's main stack, which serves every stack that shares its database."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from services.core.config import Settings
from tests.e2e.responses_support import fresh_question, image_input, make_client
from tests.support import (
    data_url,
    shape_png,
    wait_until,
)


@pytest.fixture(scope="module")
def live_server(bundled: tuple[str, Settings]) -> str:
    """The bundled stack's base URL."""
    return bundled[0]


@pytest.fixture(scope="module")
def served(bundled: tuple[str, Settings]) -> Settings:
    """The bundled stack's settings."""
    return bundled[1]


def test_a_synchronous_response_answers_the_image(
    live_server: str, api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    response = client.responses.create(
        model=served.model_id,
        input=image_input("what color is the shape?", "red"),  # type: ignore[arg-type]
        instructions="Answer in one word.",
        max_output_tokens=4,
        temperature=0,
        metadata={"order": "42"},
    )
    assert response.object == "response"
    assert response.status in ("completed", "incomplete")
    # The same conversation asked through chat gets the same answer.
    chat = client.chat.completions.create(
        model=served.model_id,
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(shape_png("red"))}},
                    {"type": "text", "text": "what color is the shape?"},
                ],
            },
        ],
        max_tokens=4,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.metadata == {"order": "42"}
    assert response.instructions == "Answer in one word."
    assert response.background is False
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.completed_at is not None


def test_logprobs_are_included_when_asked_for(
    live_server: str, api_key: str, served: Settings
) -> None:
    response = make_client(live_server, api_key).responses.create(
        model=served.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=3,
        include=["message.output_text.logprobs"],
        top_logprobs=2,
    )
    [message] = response.output
    [part] = message.content  # type: ignore[union-attr]
    assert part.type == "output_text" and part.logprobs
    assert response.usage is not None
    assert 0 < len(part.logprobs) <= response.usage.output_tokens
    assert all(len(entry.top_logprobs) == 2 for entry in part.logprobs)


def test_a_plain_string_input_is_answered(live_server: str, api_key: str, served: Settings) -> None:
    response = make_client(live_server, api_key).responses.create(
        model=served.model_id, input="what color is the shape?", max_output_tokens=3
    )
    assert response.status in ("completed", "incomplete")
    assert isinstance(response.output_text, str)


def test_a_cut_off_answer_is_incomplete(live_server: str, api_key: str, served: Settings) -> None:
    response = make_client(live_server, api_key).responses.create(
        model=served.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=2,
        extra_body={"min_tokens": 2, "ignore_eos": True},
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 2


def test_a_streamed_response_sends_openais_events_in_order(
    live_server: str, api_key: str, served: Settings
) -> None:
    stream = make_client(live_server, api_key).responses.create(
        model=served.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=6,
        stream=True,
    )
    events = list(stream)
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed"
        if events[-1].response.status == "completed"
        else "response.incomplete",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == events[-1].response.output_text


def test_a_background_response_is_polled_and_cancelling_it_twice_gives_the_final_object(
    live_server: str, api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    created = client.responses.create(
        model=served.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=4,
        background=True,
    )
    assert created.background is True
    assert created.status in ("queued", "in_progress", "completed")
    assert created.output == [] or created.status == "completed"
    done = wait_until(
        lambda: (
            (r := client.responses.retrieve(created.id)).status not in ("queued", "in_progress")
            and r
        ),
        30,
        "the background response to finish",
    )
    assert done.status in ("completed", "incomplete")
    assert done.output_text
    first = client.responses.cancel(created.id)
    second = client.responses.cancel(created.id)
    assert first.status == second.status == done.status
    assert first.output_text == second.output_text == done.output_text


def test_cancelling_a_running_background_response_stops_it(
    live_server: str, api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    created = client.responses.create(
        model=served.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=2000,
        background=True,
        extra_body={"ignore_eos": True, "min_tokens": 2000},
    )
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    again = client.responses.cancel(created.id)
    assert again.status == "cancelled"
    assert client.responses.retrieve(created.id).status == "cancelled"


def test_a_dropped_stream_resumes_after_the_last_event_read(
    live_server: str, api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    stream = client.responses.create(
        model=served.model_id,
        input=image_input(fresh_question()),  # type: ignore[arg-type]
        max_output_tokens=12,
        background=True,
        stream=True,
        extra_body={"ignore_eos": True, "min_tokens": 12},
    )
    first: list[Any] = []
    for event in stream:
        first.append(event)
        if len(first) == 6:
            break
    stream.close()
    response_id = first[0].response.id
    rest = list(
        client.responses.retrieve(
            response_id, stream=True, starting_after=first[-1].sequence_number
        )
    )
    events = first + rest
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[-1].type == "response.incomplete"
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    # A whole replay gives the same events.
    replay = list(client.responses.retrieve(response_id, stream=True))
    for seen, replayed in zip(events, replay, strict=True):
        assert replayed.model_dump() == seen.model_dump()


def test_unsupported_fields_are_refused_by_name(live_server: str, api_key: str) -> None:
    client = make_client(live_server, api_key)
    for extra in (
        {"tools": [{"type": "web_search"}]},
        {"previous_response_id": "resp_123"},
        {"reasoning": {"effort": "high"}},
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(input="hello", extra_body=extra)
        assert refused.value.code == "unsupported_parameter"
        assert refused.value.param == next(iter(extra))
    with pytest.raises(openai.BadRequestError):
        client.responses.create(input="hello", background=True, store=False)


def test_only_a_background_response_can_be_cancelled(
    live_server: str, api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    response = client.responses.create(model=served.model_id, input="hello", max_output_tokens=2)
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(response.id)


def test_an_unstored_response_cannot_be_retrieved_and_a_stored_one_can_be_deleted(
    live_server: str, api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    unstored = client.responses.create(
        model=served.model_id, input="hello", max_output_tokens=2, store=False
    )
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    stored = client.responses.create(model=served.model_id, input="hello", max_output_tokens=2)
    client.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stored.id)


def test_another_tenant_sees_no_response(
    live_server: str, api_key: str, other_api_key: str, served: Settings
) -> None:
    created = make_client(live_server, api_key).responses.create(
        model=served.model_id, input="hello", max_output_tokens=2, background=True
    )
    other = make_client(live_server, other_api_key)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(created.id)
    # A job's id is not a response's.
    job = make_client(live_server, api_key).post(
        "/jobs",
        body={"image": data_url(shape_png()), "question": "what color?", "max_tokens": 2},
        cast_to=dict,
    )
    with pytest.raises(openai.NotFoundError):
        make_client(live_server, api_key).responses.retrieve(
            "resp_" + job["id"].removeprefix("job_")
        )


def test_an_image_is_asked_about_by_the_file_id_of_an_uploaded_file(
    live_server: str, api_key: str, other_api_key: str, served: Settings
) -> None:
    client = make_client(live_server, api_key)
    image = shape_png("green", "square")
    uploaded = client.files.create(file=("square.png", image), purpose="vision")
    assert uploaded.purpose == "vision"
    question = fresh_question()

    def ask(part: dict[str, Any], key: str = api_key) -> Any:
        return make_client(live_server, key).responses.create(
            model=served.model_id,
            input=[
                {
                    "role": "user",
                    "content": [part, {"type": "input_text", "text": question}],
                }
            ],  # type: ignore[arg-type]
            max_output_tokens=4,
            temperature=0,
        )

    by_file = ask({"type": "input_image", "file_id": uploaded.id})
    by_url = ask({"type": "input_image", "image_url": data_url(image)})
    assert by_file.output_text == by_url.output_text
    assert by_file.usage is not None and by_url.usage is not None
    assert by_file.usage.input_tokens == by_url.usage.input_tokens
    # Another tenant's file is unknown; a batch file is not an image.
    with pytest.raises(openai.NotFoundError):
        ask({"type": "input_image", "file_id": uploaded.id}, other_api_key)
    batch_file = client.files.create(file=("lines.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        ask({"type": "input_image", "file_id": batch_file.id})
