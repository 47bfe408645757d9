"""The settings and input rules behind adapters, presets and the maximum image side."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.core.config import (
    BUNDLED_ADAPTER_DIR,
    BUNDLED_ADAPTER_NAME,
    BUNDLED_MODEL_DIR,
    JSON_ADAPTER_DIR,
    JSON_ADAPTER_NAME,
    Settings,
    parse_lora_modules,
)
from services.core.errors import InvalidRequestError, NotFoundError
from services.core.inputs.images import CheckedImage, check_image, fit_image
from services.core.inputs.prompts import image_side
from services.core.model_info import served_model, served_models, served_revision
from services.core.presets import check_name, check_system_prompt
from services.core.requests.generation import generation_params


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_bundled_model_brings_its_adapters_unless_told_otherwise() -> None:
    assert settings().adapters == {
        BUNDLED_ADAPTER_NAME: str(BUNDLED_ADAPTER_DIR),
        JSON_ADAPTER_NAME: str(JSON_ADAPTER_DIR),
    }
    assert settings().json_adapter_name == JSON_ADAPTER_NAME
    assert settings(json_adapter="").json_adapter_name is None
    assert settings(lora_modules="").adapters == {}
    assert settings(lora_modules="").json_adapter_name is None
    assert settings(model="/models/other").adapters == {}
    chosen = settings(lora_modules="fr=/a/fr, de = /a/de")
    assert chosen.adapters == {"fr": "/a/fr", "de": "/a/de"}
    assert chosen.served_models == ["easyvqa-glm4v", "fr", "de"]


@pytest.mark.parametrize("value", ["fr", "fr=", "=/a", "fr=/a,fr=/b", "bad name=/a"])
def test_bad_lora_modules_are_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError):
        parse_lora_modules(value)
    with pytest.raises(ValueError):
        settings(lora_modules=value)


def test_an_adapter_cannot_take_the_base_models_name() -> None:
    with pytest.raises(ValueError):
        settings(lora_modules="easyvqa-glm4v=/a")


def test_the_json_adapter_must_be_served() -> None:
    with pytest.raises(ValueError):
        settings(lora_modules="fr=/a/fr", json_adapter="json")
    assert settings(lora_modules="json=/a/j", json_adapter="json").json_adapter_name == "json"


def test_a_request_names_the_base_or_an_adapter() -> None:
    config = settings()
    assert served_model(None, config) == served_model("", config) == "easyvqa-glm4v"
    assert served_model(BUNDLED_ADAPTER_NAME, config) == BUNDLED_ADAPTER_NAME
    with pytest.raises(NotFoundError):
        served_model("gpt-4o", config)
    base, adapter, json_adapter = served_models(config)
    assert adapter.parent == json_adapter.parent == base.id and base.parent is None
    # The adapter's revision covers the base's: retraining either changes its cache keys.
    assert served_revision(config, BUNDLED_ADAPTER_NAME).startswith(base.revision + "+")
    assert served_revision(config, "easyvqa-glm4v") == base.revision


def test_top_logprobs_is_bounded_and_needs_logprobs() -> None:
    config = settings(model=str(BUNDLED_MODEL_DIR))
    assert generation_params({"logprobs": True, "top_logprobs": 20}, config).top_logprobs == 20
    for raw in ({"logprobs": True, "top_logprobs": 21}, {"top_logprobs": 2}):
        with pytest.raises(InvalidRequestError) as refused:
            generation_params(raw, config)
        assert refused.value.param == "top_logprobs"


@pytest.mark.parametrize("name", ["", "-x", "a" * 65, "a b", "x/y", "é", "x\x00"])
def test_preset_names_are_plain(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_name(name)


def test_preset_prompts_are_text_within_the_limit() -> None:
    config = settings(max_question_chars=10)
    assert check_system_prompt("  be kind ", config) == "be kind"
    for bad in ("", "   ", 7, None, "x" * 11, "a\x00b"):
        with pytest.raises(InvalidRequestError):
            check_system_prompt(bad, config)


def encoded(width: int, height: int, fmt: str = "PNG") -> CheckedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, fmt)
    return check_image(buffer.getvalue(), settings())


def test_large_images_are_downscaled_keeping_their_aspect_ratio() -> None:
    tall = fit_image(encoded(600, 1800), 1024, settings())
    assert (tall.width, tall.height) == (341, 1024)
    assert tall.media_type == "image/png"
    photo = fit_image(encoded(3000, 2000, "JPEG"), 1024, settings())
    assert (photo.width, photo.height) == (1024, 683) and photo.media_type == "image/jpeg"
    assert Image.open(io.BytesIO(photo.data)).size == (1024, 683)
    # Deterministic: the same image and side give the same bytes (and cache key).
    assert fit_image(encoded(3000, 2000, "JPEG"), 1024, settings()).sha256 == photo.sha256


def test_small_images_and_no_limit_leave_the_image_alone() -> None:
    small = encoded(300, 200)
    assert fit_image(small, 1024, settings()) is small
    large = encoded(3000, 200)
    assert fit_image(large, 0, settings()) is large


def test_low_detail_asks_for_the_smaller_side() -> None:
    config = settings(max_image_side=1024, low_detail_side=448)
    assert image_side("low", config) == 448
    assert image_side("high", config) == image_side(None, config) == 1024
    assert image_side("low", settings(max_image_side=0, low_detail_side=448)) == 448
    assert image_side("low", settings(max_image_side=300, low_detail_side=448)) == 300
    assert image_side("auto", settings(max_image_side=0)) == 0
