"""Attention maps through the public API, served by a real worker running the bundled model:
`"attention": true` on a job or a chat completion returns where the answer looked, and the
playground (headless Chromium) overlays it on the image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect

from services.core.config import Settings
from tests.e2e.responses_support import fresh_question, make_client
from tests.support import data_url, shape_png

# What is tested is the model's map and the page's overlay, not the database under them.
pytestmark = pytest.mark.one_database

# Where a test run leaves the playground's screenshot (the docs show one).
SCREENSHOT_DIR = Path(os.environ.get("VLMQ_SCREENSHOT_DIR", "/tmp"))


def weights_sum(attention: list[dict[str, object]]) -> float:
    (found,) = attention
    return sum(map(sum, found["weights"]))  # type: ignore[call-overload]


def test_a_job_and_a_chat_completion_return_the_answers_attention(
    bundled: tuple[str, Settings], api_key: str
) -> None:
    url, settings = bundled
    auth = {"Authorization": f"Bearer {api_key}", "Prefer": "wait=60"}
    image = data_url(shape_png("green", "triangle"))
    job = requests.post(
        f"{url}/v1/jobs",
        json={"image": image, "question": fresh_question(), "attention": True},
        headers=auth,
        timeout=90,
    ).json()
    assert job["status"] == "succeeded", job
    (found,) = job["result"]["attention"]
    assert found["image"] == 0 and found["grid"] == [4, 4]
    assert abs(weights_sum(job["result"]["attention"]) - 1) < 1e-3
    plain = requests.post(
        f"{url}/v1/jobs",
        json={"image": image, "question": fresh_question()},
        headers=auth,
        timeout=90,
    ).json()
    assert "attention" not in plain["result"] and plain["output"] == job["output"]

    reply = make_client(url, api_key).chat.completions.create(
        model=settings.model_id,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "text", "text": fresh_question()},
                ],
            }
        ],
        extra_body={"attention": True},
    )
    attention = reply.vlmq["attention"]  # type: ignore[attr-defined]
    assert attention[0]["grid"] == [4, 4] and abs(weights_sum(attention) - 1) < 1e-3


def test_the_playground_overlays_the_attention_on_the_image(
    bundled: tuple[str, Settings], api_key: str, browser: Browser
) -> None:
    url, _ = bundled
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{url}/")
    page.fill("#key", api_key)
    page.dispatch_event("#key", "change")
    page.click("img[data-sample='red-circle']")
    page.fill("#question", fresh_question())
    page.check("#attention")
    page.click("#ask-button")
    expect(page.locator("#status")).to_have_text("done", timeout=30_000)
    heatmap = page.locator("#heatmap")
    expect(heatmap).to_be_visible()
    expect(heatmap).to_have_attribute("data-grid", "4x4")
    # The overlay has colour where the answer looked.
    painted = page.evaluate(
        """() => { const c = document.getElementById("heatmap");
                   const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
                   let n = 0;
                   for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                   return n; }"""
    )
    assert painted > 0
    page.locator("#drop").screenshot(path=str(SCREENSHOT_DIR / "playground-attention.png"))
    context.close()
