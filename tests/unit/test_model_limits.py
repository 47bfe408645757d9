"""Submit-time limits read from the model's files, and failure messages clients can act on."""

from __future__ import annotations

import pytest

from services.core.config import BUNDLED_MODEL_DIR
from services.core.errors import InvalidRequestError
from services.core.inputs.model_limits import ModelLimits, model_limits
from workers.failures import FALLBACK, client_message


def test_the_bundled_model_has_its_processor_limits() -> None:
    limits = model_limits(str(BUNDLED_MODEL_DIR))
    assert limits.context_tokens == 4096
    assert limits.max_aspect_ratio == 200
    assert limits.token_side_px == 16
    assert limits.tokenizer_path is not None


@pytest.mark.parametrize(
    ("width", "height", "accepted"),
    [(2, 600, False), (600, 2, False), (3, 600, True), (1, 1, True), (16, 3200, True)],
)
def test_aspect_ratio_as_the_processor_sees_it(width: int, height: int, accepted: bool) -> None:
    limits = model_limits(str(BUNDLED_MODEL_DIR))
    if accepted:
        limits.check_image_shape(width, height)
    else:
        with pytest.raises(InvalidRequestError, match="aspect ratio up to 200:1") as refused:
            limits.check_image_shape(width, height)
        assert refused.value.code == "image_aspect_ratio_too_large"
        assert f"{width}x{height}" in refused.value.message


def test_a_prompt_past_the_context_is_refused() -> None:
    limits = model_limits(str(BUNDLED_MODEL_DIR))
    limits.check_context(["what color is the shape?"], [(64, 64)], 1, 256)
    with pytest.raises(InvalidRequestError, match="maximum context length is 4096") as refused:
        limits.check_context(["red " * 3000], [(64, 64)], 1, 1200)
    assert refused.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequestError):
        limits.check_context(["what color?"], [], 1, 4096)


def test_a_model_without_files_has_no_limits() -> None:
    limits = model_limits("org/some-hub-model")
    assert limits == ModelLimits()
    limits.check_context(["x" * 100_000], [], 1, 10**6)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ValueError("absolute aspect ratio must be smaller than 200, got 300"), "aspect ratio"),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "memory"),
        (OSError("image file is truncated (3 bytes not processed)"), "decoded"),
        (IndexError("index out of range in self"), "longer than the model"),
        (KeyError("pixel_values"), FALLBACK),
    ],
)
def test_failures_are_told_in_words_without_internals(exc: BaseException, words: str) -> None:
    message = client_message(exc)
    assert words in message
    assert type(exc).__name__ not in message and str(exc) not in message
