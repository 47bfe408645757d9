"""What the served model's files say a request must fit: its context length, the image
shapes its processor takes, and how many tokens an image costs.

Read once from the model directory (`config.json`, `processor_config.json` or
`preprocessor_config.json`, `tokenizer.json`) without torch, so the API can refuse a request
at submit that would otherwise fail in the middle of a batched model call. A model that is
not a local directory (a hub id) has no known limits: its requests are checked in the worker.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from services.core.errors import InvalidRequestError

# Processors that resize to multiples of `patch_size * merge_size` and refuse an aspect
# ratio over 200 (transformers' `smart_resize`); GLM-4V's scales tiny images up first.
SMART_RESIZE_PROCESSORS = {
    "Glm4vImageProcessor": True,
    "Glm4vImageProcessorFast": True,
    "Qwen2VLImageProcessor": False,
    "Qwen2VLImageProcessorFast": False,
}
SMART_RESIZE_MAX_RATIO = 200.0
# Any other processor resizes keeping the aspect ratio, so an extreme one costs memory out
# of all proportion to the image: the same cap applies.
DEFAULT_MAX_RATIO = 200.0
# Tokens the chat template adds around each message (role markers, separators).
TEMPLATE_TOKENS_PER_MESSAGE = 8


@dataclass(frozen=True)
class ModelLimits:
    """What one request to the model must fit."""

    context_tokens: int | None = None
    max_aspect_ratio: float = DEFAULT_MAX_RATIO
    # smart_resize processors: the side of one image token in pixels, the pixel range an
    # image is resized into, and whether tiny images are scaled up before the ratio check.
    token_side_px: int | None = None
    min_pixels: int = 0
    max_pixels: int = 0
    scales_up_small: bool = False
    tokenizer_path: Path | None = None

    def check_image_shape(self, width: int, height: int) -> None:
        """Refuse an image whose shape the processor cannot take (400, before enqueueing)."""
        scaled_width, scaled_height = width, height
        if self.scales_up_small and self.token_side_px and min(width, height) < self.token_side_px:
            # As the processor does it: the short side is scaled up to one token first.
            scale = max(self.token_side_px / height, self.token_side_px / width)
            scaled_width, scaled_height = int(width * scale), int(height * scale)
        ratio = max(scaled_width, scaled_height) / max(min(scaled_width, scaled_height), 1)
        if ratio > self.max_aspect_ratio:
            raise InvalidRequestError(
                f"image is {width}x{height}: this model takes images with an aspect ratio up to "
                f"{self.max_aspect_ratio:g}:1; crop or pad it",
                code="image_aspect_ratio_too_large",
                param="image",
            )

    def image_tokens(self, width: int, height: int) -> int:
        """About how many tokens an image of this size costs (0 when unknown)."""
        factor = self.token_side_px
        if not factor:
            return 0
        h_bar = max(factor, round(height / factor) * factor)
        w_bar = max(factor, round(width / factor) * factor)
        if self.max_pixels and h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif self.min_pixels and h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return (h_bar // factor) * (w_bar // factor)

    def prompt_tokens(
        self, texts: list[str], image_sizes: list[tuple[int, int]], messages: int
    ) -> int:
        """About how many tokens a prompt costs (texts without a tokenizer: 4 characters
        a token)."""
        tokenizer = load_tokenizer(self.tokenizer_path) if self.tokenizer_path else None
        text_tokens = (
            sum(len(tokenizer.encode(text, add_special_tokens=False)) for text in texts)
            if tokenizer is not None
            else sum(len(text) for text in texts) // 4
        )
        return (
            text_tokens
            + sum(self.image_tokens(width, height) for width, height in image_sizes)
            + TEMPLATE_TOKENS_PER_MESSAGE * messages
        )

    def check_context(
        self, texts: list[str], image_sizes: list[tuple[int, int]], messages: int, max_tokens: int
    ) -> int:
        """Refuse a request whose prompt and `max_tokens` do not fit the context (400);
        returns the tokens it may cost (prompt plus `max_tokens`)."""
        prompt = self.prompt_tokens(texts, image_sizes, messages)
        if self.context_tokens is not None and prompt + max_tokens > self.context_tokens:
            raise InvalidRequestError(
                f"this model's maximum context length is {self.context_tokens} tokens; this "
                f"request needs about {prompt + max_tokens} ({prompt} in the messages, "
                f"{max_tokens} in the completion): shorten the messages or lower max_tokens",
                code="context_length_exceeded",
                param="messages",
            )
        return prompt + max_tokens


@lru_cache(maxsize=4)
def model_limits(model: str) -> ModelLimits:
    """The limits of the model at `model` (a directory); no limits for a hub id."""
    path = Path(model)
    if not path.is_dir():
        return ModelLimits()
    config = read_json(path / "config.json")
    text_config = config.get("text_config") or {}
    context = text_config.get("max_position_embeddings") or config.get("max_position_embeddings")
    tokenizer = path / "tokenizer.json"
    limits = ModelLimits(
        context_tokens=int(context) if context else None,
        tokenizer_path=tokenizer if tokenizer.is_file() else None,
    )
    processor = image_processor_config(path)
    kind = str(processor.get("image_processor_type", ""))
    if kind not in SMART_RESIZE_PROCESSORS:
        return limits
    size = processor.get("size") or {}
    return dataclasses.replace(
        limits,
        max_aspect_ratio=SMART_RESIZE_MAX_RATIO,
        token_side_px=int(processor.get("patch_size", 14)) * int(processor.get("merge_size", 2)),
        min_pixels=int(size.get("shortest_edge") or processor.get("min_pixels") or 0),
        max_pixels=int(size.get("longest_edge") or processor.get("max_pixels") or 0),
        scales_up_small=SMART_RESIZE_PROCESSORS[kind],
    )


def image_processor_config(path: Path) -> dict[str, Any]:
    """The image processor's settings, from whichever file the checkpoint keeps them in."""
    processor = read_json(path / "processor_config.json")
    if isinstance(processor.get("image_processor"), dict):
        return dict(processor["image_processor"])
    return read_json(path / "preprocessor_config.json")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; empty when the file is missing or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=4)
def load_tokenizer(path: Path | None) -> Tokenizer | None:
    """The model's fast tokenizer (loaded once per process), or None without one."""
    if path is None:
        return None
    try:
        return Tokenizer.from_file(str(path))
    except Exception:  # a tokenizer this library cannot read: count no text tokens
        return None
