"""What the Responses API tests share: the strict official client, an image input, and a
question no earlier test asked."""

from __future__ import annotations

import uuid
from typing import Any

import openai

from tests.support import data_url, shape_png


def make_client(live_server: str, api_key: str) -> openai.OpenAI:
    """The official client, validating every answer strictly."""
    return openai.OpenAI(
        base_url=f"{live_server}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=60,
        _strict_response_validation=True,
    )


def image_input(question: str, color: str = "blue") -> list[dict[str, Any]]:
    """A Responses `input`: one user message with an image and a question."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_image", "image_url": data_url(shape_png(color, "circle"))},
                {"type": "input_text", "text": question},
            ],
        }
    ]


def fresh_question() -> str:
    """A question no earlier test asked (its answer is not in the cache)."""
    return f"what color is the shape? {uuid.uuid4().hex[:6]}"
