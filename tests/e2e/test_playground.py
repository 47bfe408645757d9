"""The playground in headless Chromium (Debian's, driven by playwright): pick a sample, ask,
watch the answer stream in with its timings; cancel; readable errors, a proxy's HTML page
included; moderation bars; the history.

The model is a fake that says `one two three four`, a word every 0.4 s, streaming each, so
the test sees the answer arrive in pieces and has time to cancel; what is tested is the page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from services.api import create_app
from tests.fake_stack import FakeStack
from tests.support import serving

# What is tested is the page: the database under it is not its subject.
pytestmark = pytest.mark.one_database


@pytest.fixture()
def page(fake_stack: FakeStack, browser: Browser, api_key: str) -> Iterator[Page]:
    """The playground of the fake stack on a real port, with the key filled in."""
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.4")
    with serving(create_app(fake_stack.settings), fake_stack.settings) as url:
        context = browser.new_context()
        opened = context.new_page()
        opened.goto(f"{url}/")
        opened.fill("#key", api_key)
        opened.dispatch_event("#key", "change")
        yield opened
        context.close()


def pick_sample(page: Page, name: str = "red-circle") -> None:
    page.click(f"img[data-sample='{name}']")
    expect(page.locator("#drop-hint")).to_have_text(f"{name}.png")


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_ask_streams_the_answer_with_its_timings(page: Page) -> None:
    pick_sample(page)
    page.fill("#question", "count to four")
    page.click("#ask-button")
    expect(page.locator("#ask-button")).to_be_disabled()
    # Part of the answer is on the page before the whole of it.
    expect(page.locator("#answer")).to_contain_text("one")
    partial = page.locator("#answer").inner_text()
    assert "four" not in partial
    expect(page.locator("#answer")).to_have_text("one two three four", timeout=20_000)
    expect(page.locator("#status")).to_have_text("done")
    expect(page.locator("#ask-button")).to_be_enabled()
    expect(page.locator("dd[data-fact='status']")).to_have_text("succeeded")
    expect(page.locator("dd[data-fact='cache hit']")).to_have_text("no")
    expect(page.locator("dd[data-fact='batch size']")).to_have_text("1")
    assert page.locator("dd[data-fact='first token']").inner_text().endswith(" ms")
    expect(page.locator("#history li").first).to_contain_text("count to four → one two three four")
    page.click("#copy-curl")
    expect(page.locator("#snippet")).to_contain_text("/v1/chat/completions")
    page.click("#copy-python")
    expect(page.locator("#snippet")).to_contain_text("from openai import OpenAI")


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_the_responses_api_streams_a_background_response_with_its_resume_cursor(
    page: Page, fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    pick_sample(page)
    page.select_option("#api", "responses")
    page.fill("#question", "count to four")
    page.click("#ask-button")
    expect(page.locator("#answer")).to_contain_text("one")
    expect(page.locator("#cursor")).to_contain_text("resumable after event")
    expect(page.locator("#answer")).to_have_text("one two three four", timeout=20_000)
    expect(page.locator("#status")).to_have_text("done")
    expect(page.locator("dd[data-fact='status']")).to_have_text("succeeded")
    cursor = page.locator("#cursor").inner_text()
    response_id = cursor.split()[1].rstrip(",")
    last = int(cursor.split("starting_after=")[1])
    # The cursor names the response's last event: nothing comes after it.
    stream = fake_stack.client.get(
        f"/v1/responses/{response_id}?stream=true&starting_after={last}", headers=auth
    )
    assert stream.status_code == 200 and stream.get_data() == b""
    whole = fake_stack.client.get(f"/v1/responses/{response_id}?stream=true", headers=auth)
    assert whole.get_data().decode().count("sequence_number") == last + 1


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_cancel_stops_the_job(page: Page, fake_stack: FakeStack, auth: dict[str, str]) -> None:
    pick_sample(page, "blue-rectangle")
    page.fill("#question", "count slowly")
    page.click("#ask-button")
    expect(page.locator("#answer")).to_contain_text("one")
    page.click("#cancel-button")
    expect(page.locator("#status")).to_have_text("canceled")
    expect(page.locator("#ask-button")).to_be_enabled()
    jobs = fake_stack.client.get("/v1/jobs?limit=1", headers=auth).get_json()["data"]
    assert jobs[0]["status"] == "canceled"


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_errors_are_readable_whatever_the_answer(page: Page) -> None:
    page.click("#ask-button")
    expect(page.locator("#error")).to_contain_text("pick, drop or paste an image")
    pick_sample(page)
    page.fill("#key", "not-a-key")
    page.click("#ask-button")
    expect(page.locator("#error")).to_contain_text("401")
    expect(page.locator("#error")).to_contain_text("invalid_api_key")
    expect(page.locator("#ask-button")).to_be_enabled()
    # A proxy in front of vlmq answering its own HTML page.
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(
            status=502,
            content_type="text/html",
            body="<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        ),
    )
    page.click("#ask-button")
    expect(page.locator("#error")).to_contain_text("502")
    expect(page.locator("#error")).to_contain_text("Bad Gateway")
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("#ask-button")).to_be_enabled()


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_the_page_serves_its_samples_and_icon_and_shows_moderation(page: Page) -> None:
    for path in ("/favicon.ico", "/playground/samples/green-triangle.png"):
        assert page.request.get(page.url.rstrip("/") + path).status == 200
    assert page.request.get(page.url.rstrip("/") + "/playground/samples/..%2Fx.png").status == 404
    page.click("#tab-batches")
    expect(page.locator("#batches")).to_be_visible()
    page.click("#tab-moderation")
    expect(page.locator("#moderation")).to_be_visible()
    page.click("#moderate-button")
    expect(page.locator("#mod-error")).to_contain_text("pick an image")


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_the_page_runs_under_its_policy_and_keeps_the_key_in_the_tab(
    page: Page, api_key: str
) -> None:
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text))
    page.reload()
    expect(page.locator("#key")).to_have_value(api_key)  # the tab still has it
    assert not [line for line in refused if "Content Security Policy" in line], refused
    assert page.evaluate("localStorage.getItem('vlmq-key')") is None
    assert page.evaluate("sessionStorage.getItem('vlmq-key')") == api_key
    page.check("#remember")
    assert page.evaluate("localStorage.getItem('vlmq-key')") == api_key
    page.uncheck("#remember")
    assert page.evaluate("localStorage.getItem('vlmq-key')") is None


@pytest.mark.fake_backend("StreamingFakeBackend")
def test_the_json_schema_field_asks_for_structured_output(page: Page) -> None:
    pick_sample(page)
    page.click("#schema-editor summary")
    sample = json.loads(page.input_value("#schema"))
    assert sample["properties"]["color"]["enum"] and sample["required"] == ["color", "shape"]
    page.check("#use-schema")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#ask-button")
    body = json.loads(sent.value.post_data or "{}")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": sample, "strict": True},
    }
    expect(page.locator("#status")).to_have_text("done", timeout=20_000)
    page.click("#copy-python")
    expect(page.locator("#snippet")).to_contain_text("response_format=json.loads(")
    # The Responses API gets the same schema as its text.format.
    page.select_option("#api", "responses")
    with page.expect_request("**/v1/responses") as sent:
        page.click("#ask-button")
    text = json.loads(sent.value.post_data or "{}")["text"]
    assert text["format"] == {
        "type": "json_schema",
        "name": "answer",
        "schema": sample,
        "strict": True,
    }
    expect(page.locator("#status")).to_have_text("done", timeout=20_000)
    # A schema that is not JSON is said so on the page, and nothing is sent.
    page.fill("#schema", "{not json")
    page.click("#ask-button")
    expect(page.locator("#error")).to_contain_text("the JSON schema is not valid JSON")
