"""The model-side features over HTTP, on a real worker serving the bundled model and its
bundled LoRA adapter: adapters picked as `model`, token logprobs and confidence, prompt
presets, and the downscaling of large images."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from easy_vqa import get_test_image_paths, get_test_questions
from flask.testing import FlaskClient
from PIL import Image
from playwright.sync_api import Browser, expect

from services.api import create_app
from services.core.bootstrap import create_runtime
from services.core.config import (
    BUNDLED_ADAPTER_NAME,
    JSON_ADAPTER_NAME,
    Settings,
)
from services.core.runtime import Runtime
from services.core.tables import Image as StoredImage
from services.core.tables import Job
from tests.support import bundled_worker_log, data_url, wait_until
from workers.models.evaluate_easyvqa import FRENCH_ANSWERS

FR = BUNDLED_ADAPTER_NAME
BASE = "easyvqa-glm4v"


class Stack:
    """The bundled model's stack: settings, runtime, a test client, a live URL, the worker's
    log."""

    def __init__(
        self, settings: Settings, runtime: Runtime, client: FlaskClient, url: str, worker_log: Path
    ):
        self.settings = settings
        self.runtime = runtime
        self.client = client
        self.url = url
        self.worker_log = worker_log


@pytest.fixture(scope="module")
def stack(bundled: tuple[str, Settings]) -> Iterator[Stack]:
    """The bundled model's stack (default settings: its adapter is served beside it)."""
    url, settings = bundled
    runtime = create_runtime(settings)
    try:
        yield Stack(
            settings, runtime, create_app(settings).test_client(), url, bundled_worker_log(settings)
        )
    finally:
        runtime.close()


def openai_client(stack: Stack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=api_key, max_retries=0, timeout=60)


def easy_vqa(index: int) -> tuple[str, str, bytes]:
    """(question, English answer, PNG bytes) of one easy-VQA test question."""
    questions, answers, image_ids = get_test_questions()
    path = Path(get_test_image_paths()[image_ids[index]])
    return questions[index], answers[index], path.read_bytes()


def messages(question: str, image: bytes, **image_url: Any) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(image), **image_url}},
                {"type": "text", "text": question},
            ],
        }
    ]


def job(stack: Stack, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = stack.client.post("/v1/jobs", json=body, headers={**auth, "Prefer": "wait=60"})
    assert response.status_code == 202, response.get_json()
    answer: dict[str, Any] = response.get_json()
    assert answer["status"] == "succeeded", answer
    return answer


# --- LoRA adapters -------------------------------------------------------------------------


def test_models_lists_the_adapter_with_the_base_as_parent(stack: Stack, api_key: str) -> None:
    models = openai_client(stack, api_key).models.list().data
    assert [model.id for model in models] == [BASE, FR, JSON_ADAPTER_NAME]
    base, adapter, json_adapter = (model.model_extra or {} for model in models)
    assert base["parent"] is None and adapter["parent"] == json_adapter["parent"] == BASE
    assert adapter["root"] == FR
    one = stack.client.get(f"/v1/models/{FR}", headers={"Authorization": f"Bearer {api_key}"})
    assert one.status_code == 200 and one.get_json()["parent"] == BASE


def test_the_adapter_answers_in_french_and_never_shares_the_base_cache(
    stack: Stack, auth: dict[str, str]
) -> None:
    question, answer, image = easy_vqa(10)
    body = {"image": data_url(image), "question": question, "max_tokens": 4}
    english = job(stack, auth, **body)
    french = job(stack, auth, **body, model=FR)
    assert english["output"] == answer and english["model"] == BASE
    assert french["output"] == FRENCH_ANSWERS[answer] and french["model"] == FR
    assert not french["cache_hit"]
    again = job(stack, auth, **body, model=FR)
    assert again["cache_hit"] and again["output"] == french["output"]
    unknown = stack.client.post("/v1/jobs", json={**body, "model": "nope"}, headers=auth)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "model_not_found"


def test_base_and_adapter_requests_share_model_calls(stack: Stack, auth: dict[str, str]) -> None:
    """Submitted at once, base and adapter jobs run in the same batch (mixed-adapter)."""
    submitted = []
    for index in range(8):
        question, _, image = easy_vqa(200 + index)
        body = {
            "image": data_url(image),
            "question": question,
            "max_tokens": 6,
            "ignore_eos": True,
            "model": FR if index % 2 else BASE,
        }
        response = stack.client.post("/v1/jobs", json=body, headers=auth)
        submitted.append(response.get_json()["id"])

    def finished() -> list[dict[str, Any]] | None:
        jobs = [stack.client.get(f"/v1/jobs/{i}", headers=auth).get_json() for i in submitted]
        return jobs if all(item["status"] == "succeeded" for item in jobs) else None

    jobs = wait_until(finished, 60, "the jobs")
    shared = [item["metrics"]["batch_size"] for item in jobs]
    assert max(shared) > 1, shared
    for index, item in enumerate(jobs):
        assert item["model"] == (FR if index % 2 else BASE)


def test_a_canceled_streaming_job_leaves_the_batch_at_once(
    stack: Stack, auth: dict[str, str]
) -> None:
    """Through the worker: a job canceled while it streams stops decoding within steps,
    not after its 4000 tokens; a job beside it finishes."""
    question, _, image = easy_vqa(60)
    body = {
        "messages": messages(question, image),
        "max_tokens": 4000,
        "ignore_eos": True,
        "stream": True,
    }
    with stack.client.post("/v1/chat/completions", json=body, headers=auth, buffered=False) as (
        response
    ):
        chunks = response.iter_encoded()
        first = next(chunks).decode()
        job_id = "job_" + first.split('"id":"chatcmpl-')[1].split('"')[0]
        wait_until(lambda: b'"content":"' in next(chunks), 30, "streamed text")
        canceled = stack.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).get_json()
        assert canceled["status"] == "canceled"
        beside = job(stack, auth, image=data_url(image), question=question, max_tokens=4)
        assert beside["status"] == "succeeded"

        def worker_says_canceled() -> bool:
            log = stack.worker_log.read_text(errors="replace")
            return any(job_id in line and "outcome=canceled" in line for line in log.splitlines())

        wait_until(worker_says_canceled, 30, "the worker to drop the canceled row")
    with stack.runtime.sessions() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.status == "canceled"
        # It stopped long before its length: no answer was recorded for it.
        assert row.output is None


# --- logprobs and confidence ---------------------------------------------------------------


def test_openai_client_logprobs_with_the_adapter_and_in_streams(stack: Stack, api_key: str) -> None:
    client = openai_client(stack, api_key)
    question, answer, image = easy_vqa(20)
    asked: dict[str, Any] = {
        "model": FR,
        "messages": messages(question, image),
        "max_tokens": 4,
        "logprobs": True,
        "top_logprobs": 2,
    }
    completion = client.chat.completions.create(**asked)
    choice = completion.choices[0]
    assert choice.message.content == FRENCH_ANSWERS[answer]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    [token] = choice.logprobs.content
    assert token.token == FRENCH_ANSWERS[answer] and token.logprob <= 0
    assert token.bytes == list(token.token.encode())
    assert len(token.top_logprobs) == 2 and token.top_logprobs[0].token == token.token
    chunks = list(client.chat.completions.create(**asked, stream=True))
    streamed = [
        entry
        for chunk in chunks
        for choice in chunk.choices
        if choice.logprobs and choice.logprobs.content
        for entry in choice.logprobs.content
    ]
    assert [entry.token for entry in streamed] == [token.token]
    assert math.isclose(streamed[0].logprob, token.logprob, abs_tol=1e-5)
    plain = client.chat.completions.create(**{**asked, "logprobs": False, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_a_job_reports_its_confidence(stack: Stack, auth: dict[str, str]) -> None:
    question, answer, image = easy_vqa(30)
    body = {"image": data_url(image), "question": question, "max_tokens": 4}
    result = job(stack, auth, **body, logprobs=True)["result"]
    [entry] = result["logprobs"]["content"]
    assert entry["token"] == answer and entry["top_logprobs"] == []
    assert 0 < result["confidence"] <= 1
    assert math.isclose(result["confidence"], math.exp(entry["logprob"]), rel_tol=1e-9)
    assert "confidence" not in job(stack, auth, **body)["result"]
    refused = stack.client.post("/v1/jobs", json={**body, "top_logprobs": 21}, headers=auth)
    assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "top_logprobs"
    alone = stack.client.post("/v1/jobs", json={**body, "top_logprobs": 2}, headers=auth)
    assert alone.status_code == 400 and alone.get_json()["error"]["param"] == "top_logprobs"


# --- presets -------------------------------------------------------------------------------


def test_presets_are_each_tenants_own(
    stack: Stack, auth: dict[str, str], other_api_key: str
) -> None:
    other = {"Authorization": f"Bearer {other_api_key}"}
    client = stack.client
    put = client.put("/v1/presets/shop", json={"system_prompt": "be brief"}, headers=auth)
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["owned_by"] == "tenant"
    assert client.get("/v1/presets/shop", headers=auth).get_json()["system_prompt"] == "be brief"
    names = [preset["name"] for preset in client.get("/v1/presets", headers=auth).json["data"]]
    assert {"shop", "customer-service"} <= set(names)
    assert client.get("/v1/presets/shop", headers=other).status_code == 404
    assert "shop" not in [p["name"] for p in client.get("/v1/presets", headers=other).json["data"]]
    question, _, image = easy_vqa(40)
    body = {"image": data_url(image), "question": question, "preset": "shop"}
    refused = client.post("/v1/jobs", json=body, headers=other)
    assert refused.status_code == 404
    assert refused.get_json()["error"]["code"] == "preset_not_found"
    assert client.delete("/v1/presets/shop", headers=other).status_code == 404
    assert client.delete("/v1/presets/shop", headers=auth).get_json()["deleted"] is True
    assert client.get("/v1/presets/shop", headers=auth).status_code == 404
    bad = client.put("/v1/presets/no%20spaces", json={"system_prompt": "x"}, headers=auth)
    assert bad.status_code == 400
    empty = client.put("/v1/presets/empty", json={"system_prompt": " "}, headers=auth)
    assert empty.status_code == 400 and empty.get_json()["error"]["param"] == "system_prompt"


def test_a_preset_is_part_of_the_prompt_and_of_the_cache_key(
    stack: Stack, auth: dict[str, str], api_key: str
) -> None:
    client = stack.client
    client.put("/v1/presets/careful", json={"system_prompt": "look closely"}, headers=auth)
    question, _, image = easy_vqa(50)
    body = {"image": data_url(image), "question": question, "max_tokens": 4}
    plain = job(stack, auth, **body)
    preset = job(stack, auth, **body, preset="careful")
    assert not preset["cache_hit"]
    grown = preset["result"]["usage"]["prompt_tokens"] - plain["result"]["usage"]["prompt_tokens"]
    assert grown >= 2  # "look closely", after the system marker
    assert job(stack, auth, **body, preset="careful")["cache_hit"]
    # The deployment's preset, through the OpenAI client (an extra body field).
    completion = openai_client(stack, api_key).chat.completions.create(
        model=BASE,
        messages=messages(question, image),  # type: ignore[arg-type]
        max_tokens=4,
        extra_body={"preset": "customer-service"},
    )
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > plain["result"]["usage"]["prompt_tokens"] + 20


# --- the maximum image side ----------------------------------------------------------------


def large_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (width, height), "white")
    image.paste(Image.new("RGB", (width // 2, height // 2), "red"), (width // 4, height // 4))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def stored_sizes(stack: Stack, job_id: str) -> list[tuple[int, int]]:
    with stack.runtime.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        hashes = [
            part["sha256"]
            for message in job.messages
            for part in message["content"]
            if part["type"] == "image"
        ]
        rows = {
            row.sha256: (row.width, row.height)
            for row in session.scalars(sa.select(StoredImage).where(StoredImage.sha256.in_(hashes)))
        }
    return [rows[sha] for sha in hashes]


def test_large_images_are_downscaled_once_and_low_detail_further(
    stack: Stack, auth: dict[str, str]
) -> None:
    image = large_png(2000, 1000)
    question = "what color is the shape?"
    default = job(stack, auth, messages=messages(question, image), max_tokens=4)
    low = job(stack, auth, messages=messages(question, image, detail="low"), max_tokens=4)
    shorthand = job(stack, auth, image=data_url(image), question=question, max_tokens=4)
    assert stored_sizes(stack, default["id"]) == [(1024, 512)]
    assert stored_sizes(stack, shorthand["id"]) == [(1024, 512)]
    assert stored_sizes(stack, low["id"]) == [(448, 224)]
    assert not low["cache_hit"]  # another size, another cache key
    assert default["output"] == "red" and low["output"] == "red"
    small = job(stack, auth, image=data_url(easy_vqa(0)[2]), question=question, max_tokens=4)
    assert stored_sizes(stack, small["id"]) == [(64, 64)]
    bad = stack.client.post(
        "/v1/jobs",
        json={"messages": messages(question, image, detail="huge")},
        headers=auth,
    )
    assert bad.status_code == 400


# --- the playground ------------------------------------------------------------------------


def test_the_playground_uses_the_adapter_a_preset_and_token_confidence(
    stack: Stack, browser: Browser, api_key: str
) -> None:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{stack.url}/")
        page.fill("#key", api_key)
        page.dispatch_event("#key", "change")
        expect(page.locator(f"#model option[value='{FR}']")).to_have_count(1)
        page.locator("#preset-editor summary").click()
        page.fill("#preset-name", "playground-terse")
        page.fill("#preset-text", "answer in one word")
        page.click("#save-preset")
        expect(page.locator("#preset-status")).to_have_text("saved playground-terse")
        expect(page.locator("#preset")).to_have_value("playground-terse")
        page.select_option("#model", FR)
        page.check("#logprobs")
        page.locator("#samples img").first.click()  # the red circle
        page.click("#ask-button")
        expect(page.locator("#status")).to_have_text("done", timeout=60_000)
        expect(page.locator("#answer")).to_have_text("rouge")
        token = page.locator("#tokens span")
        expect(token).to_have_count(1)
        expect(token).to_have_text("rouge")
        assert 0 < float(token.get_attribute("data-probability") or "0") <= 1
        expect(page.locator("dd[data-fact='confidence']")).to_contain_text("%")
        expect(page.locator("dd[data-fact='model']")).to_have_text(FR)
    finally:
        context.close()
