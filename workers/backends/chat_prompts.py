"""The model's inputs from conversations: the chat template rendered once per conversation
shape, then the processor (tokenizer and image processor) on the rendered text.

`processor.apply_chat_template(..., tokenize=True)` renders the template in Jinja's
sandbox for every conversation of every call. What a template writes depends on the
conversation's text and roles and on where its images are, never on an image's pixels
(the processor expands each image's placeholder afterwards), so the text is rendered from
the conversation's shape (its images replaced by their type's name) and kept by it: a
repeated question renders once.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from services.core.inputs.prompts import image_parts

# Rendered prompts kept per backend: distinct conversation shapes (questions, presets,
# roles) seen lately; one is a few hundred bytes.
PROMPTS_KEPT = 4096


def shape_of(conversation: list[dict[str, Any]], options: dict[str, Any]) -> str:
    """What the chat template's text depends on: the conversation with each image (or any
    other non-JSON value) replaced by its type's name, and the template's options."""
    return json.dumps([conversation, options], default=lambda value: f"<{type(value).__name__}>")


def images_of(conversation: list[dict[str, Any]]) -> list[Any]:
    """The conversation's images (decoded), in the order the template places them."""
    return [part["image"] for part in image_parts(conversation)]


class ChatPrompts:
    """A processor's chat template, rendered once per conversation shape (see the module)."""

    def __init__(self, processor: Any, kept: int = PROMPTS_KEPT) -> None:
        self.processor = processor
        # The prompt text of a shape, the `kept` shapes used last (`lru_cache` is thread-safe:
        # the scheduler's thread encodes, and so may a caller of `predict` beside it).
        self.rendered = functools.lru_cache(maxsize=kept)(self._render_shape)

    def render(self, conversation: list[dict[str, Any]], options: dict[str, Any]) -> str:
        """The conversation's prompt text, with the generation prompt added."""
        return self.rendered(shape_of(conversation, options))

    def _render_shape(self, shape: str) -> str:
        # Rendered from the shape itself: the text can depend on nothing the key leaves out.
        conversation, options = json.loads(shape)
        return str(
            self.processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False, **options
            )
        )

    def encode(self, conversations: list[list[dict[str, Any]]], options: dict[str, Any]) -> Any:
        """The model's inputs (token ids, attention mask, pixel values), left-padded as the
        processor pads: what `apply_chat_template(..., tokenize=True)` returns."""
        prompts = [self.render(conversation, options) for conversation in conversations]
        images = [images_of(conversation) for conversation in conversations]
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        bos = self.processor.tokenizer.bos_token
        if bos is not None and prompts and prompts[0].startswith(bos):
            # The template wrote the start token already (as `apply_chat_template` checks).
            kwargs["add_special_tokens"] = False
        return self.processor(text=prompts, images=images if any(images) else None, **kwargs)
