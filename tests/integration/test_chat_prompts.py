"""The model's inputs built from a kept prompt are the inputs `apply_chat_template` builds,
for every architecture's processor and every shape of conversation the service sends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from bench.model_alone import encoded
from services.core.config import BUNDLED_MODEL_DIR
from tests.conftest import TINY_WORDS
from tests.tiny_llava import build_tiny_llava
from tests.tiny_qwen2vl import build_tiny_qwen2vl
from workers.backends.chat_prompts import ChatPrompts

BUILDERS: dict[str, Callable[[list[str], Path], Path]] = {
    "llava": build_tiny_llava,
    "qwen2vl": build_tiny_qwen2vl,
}


@pytest.fixture(scope="module", params=["bundled", "llava", "qwen2vl"])
def processor(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name = request.param
    path = (
        BUNDLED_MODEL_DIR
        if name == "bundled"
        else BUILDERS[name](TINY_WORDS, tmp_path_factory.mktemp(name))
    )
    loaded = AutoProcessor.from_pretrained(str(path))
    loaded.tokenizer.padding_side = "left"
    return loaded


def image(color: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


def ask(question: str, *images: Image.Image, system: str | None = None) -> list[dict[str, Any]]:
    """A conversation: an optional system message, then the user's images and question."""
    parts: list[dict[str, Any]] = [{"type": "image", "image": picture} for picture in images]
    parts.append({"type": "text", "text": question})
    conversation: list[dict[str, Any]] = []
    if system is not None:
        conversation.append({"role": "system", "content": [{"type": "text", "text": system}]})
    conversation.append({"role": "user", "content": parts})
    return conversation


def options_for(processor: Any, thinking: bool) -> dict[str, Any]:
    """The template options the backend passes (GLM's thinking switch, where it has one)."""
    if "enable_thinking" in (processor.chat_template or ""):
        return {"enable_thinking": thinking}
    return {}


def expected(processor: Any, conversations: list[Any], options: dict[str, Any]) -> Any:
    """The inputs `transformers` alone builds (`apply_chat_template`, tokenized)."""
    return encoded(processor, conversations, **options)


def assert_same_inputs(ours: Any, theirs: Any) -> None:
    assert set(ours.keys()) == set(theirs.keys())
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name


BATCHES = {
    "one image": [ask("what color is the shape?", image("red"))],
    "a batch of different lengths": [
        ask("what color is the shape?", image("red")),
        ask("is there a circle?", image("blue", (96, 64))),
        ask("what shape is in the image? answer in one word", image("green", (32, 32))),
    ],
    "two images and a system message": [
        ask("which is red?", image("red"), image("blue"), system="answer in one word")
    ],
    "text only": [ask("what color is the sky?")],
}


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("batch", list(BATCHES))
def test_inputs_equal_the_chat_template_s(processor: Any, batch: str, thinking: bool) -> None:
    conversations = BATCHES[batch]
    options = options_for(processor, thinking)
    prompts = ChatPrompts(processor)
    first = prompts.encode(conversations, options)
    assert_same_inputs(first, expected(processor, conversations, options))
    # Rendered from the kept text the second time: still the same inputs.
    assert_same_inputs(prompts.encode(conversations, options), first)


def test_a_kept_prompt_serves_other_images_of_other_sizes(processor: Any) -> None:
    prompts = ChatPrompts(processor)
    prompts.encode([ask("what color is the shape?", image("red"))], {})
    assert prompts.rendered.cache_info().currsize == 1
    other = [ask("what color is the shape?", image("blue", (128, 96)))]
    ours = prompts.encode(other, {})
    assert prompts.rendered.cache_info().currsize == 1
    assert_same_inputs(ours, expected(processor, other, {}))


def test_the_template_s_input_decides_what_is_kept(processor: Any) -> None:
    prompts = ChatPrompts(processor, kept=2)
    for question in ["what color?", "what shape?", "is there a circle?"]:
        prompts.encode([ask(question, image("red"))], {})
    assert prompts.rendered.cache_info().currsize == 2
    # A different question, or a different place for the image, is a different prompt.
    first, second = (prompts.render(ask(q, image("red")), {}) for q in ["what color?", "hello"])
    assert first != second
    moved = [
        {
            "role": "user",
            "content": [
                ask("what color?")[0]["content"][0],
                {"type": "image", "image": image("red")},
            ],
        }
    ]
    assert prompts.render(moved, {}) != first
