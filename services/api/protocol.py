"""The shared bases of the request body schemas (`*Request` in each resource's protocol)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class VlmqRequest(BaseModel):
    """A request body: unknown fields are refused, so a typo never passes silently.

    Schemas of OpenAI-shaped bodies set `OPENAI_COMPATIBLE` instead: their clients send
    fields vlmq does not read, and vLLM ignores those too.
    """

    model_config = ConfigDict(extra="forbid")


OPENAI_COMPATIBLE = ConfigDict(extra="ignore")

# A 16×16 PNG of a red circle, for the examples of the OpenAPI document (its docs page and
# schemathesis send them as they are).
EXAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAATklEQVR4nGP8//8/"
    "AymAiSTV5GhgwSLGyIhgYzgYwwZk1ZhcdA0Y0piCTLgkcOmhfShRogFPlCNJMeGSwCWI4SQ0PRhGYItpvMmR9qEEA"
    "G9gEx+a1gc3AAAAAElFTkSuQmCC"
)
EXAMPLE_MESSAGES: list[Any] = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": EXAMPLE_IMAGE}},
            {"type": "text", "text": "What color is the shape?"},
        ],
    }
]


class GenerationRequest(VlmqRequest):
    """The model and generation parameters that job and chat requests share."""

    # The base model's id or a LoRA adapter's (`GET /v1/models`); absent: the base model.
    model: str | None = None
    # A prompt preset's name (`/v1/presets`): its text becomes the first system message.
    preset: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    enable_thinking: bool | None = None
    # vLLM's extensions, for answers of a known length (benchmarks, load tests).
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    # OpenAI's token log-probabilities (`top_logprobs`: 0-20 alternatives per token).
    logprobs: bool | None = None
    top_logprobs: int | None = None
