"""The rest of the OpenAI surface through the official client: models.retrieve, files.list
and files.delete, text-only chat, `n` choices, and every option vlmq cannot honour refused
with `400 unsupported_parameter` naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from services.core.config import Settings
from tests.support import chat_batch_input, data_url, shape_png, wait_until

pytestmark = pytest.mark.usefixtures("worker")


def make_client(live_server: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=60)


def image_message(question: str) -> list[Any]:
    image = {"type": "image_url", "image_url": {"url": data_url(shape_png("red", "circle"))}}
    return [{"role": "user", "content": [image, {"type": "text", "text": question}]}]


def test_models_retrieve(live_server: str, api_key: str, settings: Settings) -> None:
    client = make_client(live_server, api_key)
    model = client.models.retrieve(settings.model_id)
    assert model.id == settings.model_id and model.object == "model"
    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve("no-such-model")
    assert refused.value.code == "model_not_found"


def upload(client: openai.OpenAI, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(chat_batch_input(1, tag=name))
    return client.files.create(file=path.open("rb"), purpose="batch").id


def test_files_list_pages_filters_and_delete_removes(
    live_server: str, other_api_key: str, tmp_path: Path
) -> None:
    client = make_client(live_server, other_api_key)
    ids = [upload(client, tmp_path, f"list{n}.jsonl") for n in range(3)]
    listed = [file.id for file in client.files.list(purpose="batch", limit=2)]  # auto-paging
    assert ids[::-1] == [file_id for file_id in listed if file_id in ids]
    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    assert all(file.purpose == "batch" for file in client.files.list(purpose="batch"))
    with pytest.raises(openai.BadRequestError):
        client.files.list(purpose="fine-tune")
    deleted = client.files.delete(ids[0])
    assert deleted.id == ids[0] and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[0])
    assert ids[0] not in [file.id for file in client.files.list()]
    with pytest.raises(openai.NotFoundError):
        client.files.delete(ids[0])


@pytest.mark.usefixtures("background_worker")  # it finalizes the cancelled batch
def test_a_file_is_not_deleted_while_a_batch_reads_it(
    live_server: str, api_key: str, tmp_path: Path
) -> None:
    client = make_client(live_server, api_key)
    path = tmp_path / "busy.jsonl"
    path.write_bytes(chat_batch_input(40, "is the shape red?", tag="busy"))
    file = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.ConflictError) as refused:
        client.files.delete(file.id)
    assert refused.value.code == "file_in_use" and batch.id in str(refused.value.message)
    try:
        client.batches.cancel(batch.id)
    except openai.ConflictError as ended:
        # Its 40 lines may all be answered already: then it ended on its own.
        assert "already completed" in str(ended.message)
    wait_until(
        lambda: client.batches.retrieve(batch.id).status in ("cancelled", "completed"),
        60,
        f"batch {batch.id} to end",
        interval_s=0.2,
    )
    assert client.files.delete(file.id).deleted is True


def test_text_only_chat_is_answered(live_server: str, api_key: str, settings: Settings) -> None:
    completion = make_client(live_server, api_key).chat.completions.create(
        model=settings.model_id,
        messages=[{"role": "user", "content": "say hello"}],
        max_tokens=3,
    )
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


def test_n_choices_come_from_one_request(
    live_server: str, api_key: str, settings: Settings
) -> None:
    client = make_client(live_server, api_key)

    def three_choices() -> Any:
        return client.chat.completions.create(
            model=settings.model_id,
            messages=image_message("what color is the shape?"),  # type: ignore[arg-type]
            max_tokens=3,
            temperature=0.9,
            seed=7,
            n=3,
        )

    completion = three_choices()
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 3 * 3
    assert len(completion.vlmq["job_ids"]) == 3  # type: ignore[attr-defined]
    again = three_choices()
    # Each choice has a seed of its own (7, 8, 9): the same request gives the same choices.
    assert [c.message.content for c in again.choices] == [
        c.message.content for c in completion.choices
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=settings.model_id,
            messages=image_message("?"),  # type: ignore[arg-type]
            n=settings.max_choices + 1,
        )
    assert refused.value.param == "n"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "required"),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"50256": -100}),
        ("store", True),
        ("modalities", ["text", "audio"]),
        ("reasoning_effort", "high"),
    ],
)
def test_an_option_vlmq_cannot_honour_is_refused_by_name(
    live_server: str, api_key: str, settings: Settings, option: str, value: object
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        make_client(live_server, api_key).chat.completions.create(
            model=settings.model_id,
            messages=image_message("what color is the shape?"),  # type: ignore[arg-type]
            max_tokens=2,
            **{option: value},  # type: ignore[arg-type]
        )
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == option


def test_default_values_of_those_options_are_accepted(
    live_server: str, api_key: str, settings: Settings
) -> None:
    completion = make_client(live_server, api_key).chat.completions.create(
        model=settings.model_id,
        messages=image_message("what color is the shape?"),  # type: ignore[arg-type]
        max_tokens=2,
        logprobs=False,
        response_format={"type": "text"},
        presence_penalty=0,
        frequency_penalty=0,
        tool_choice="none",
        user="customer-42",
    )
    assert completion.choices[0].message.content is not None
