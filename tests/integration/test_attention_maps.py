"""Attention maps from the transformers backend: where the answer looked in each image, on
the bundled model and on tiny checkpoints of the other architectures, in both batching
paths, without changing the answer of any request it shares a model call with."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from services.core.config import BUNDLED_MODEL_DIR
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from tests.conftest import TINY_WORDS
from tests.support import shape_png
from tests.tiny_llava import build_tiny_llava
from tests.tiny_qwen2vl import build_tiny_qwen2vl
from workers.backends.base import Prediction, PredictRequest
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import conversation


def ask(image: Image.Image, attention: bool) -> PredictRequest:
    return PredictRequest(
        conversation(image, "what color is the shape?"),
        GenerationParams(max_tokens=4, attention=attention),
    )


def together(backend: TransformersVLM, requests: list[PredictRequest]) -> list[Prediction]:
    """The requests in one model call, in either path."""
    engine = backend.continuous_engine()
    if engine is None:
        return backend.predict(requests)
    finished = engine.admit(list(enumerate(requests)))
    while len(engine):
        finished += engine.step()
    return [g.prediction for g in sorted(finished, key=lambda g: int(g.key))]  # type: ignore[call-overload]


def corner_square(color: str) -> Image.Image:
    """A 64x64 image: one filled square in its top-left quarter, white elsewhere."""
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((2, 2, 28, 28), fill=color)
    return image


def check_map(prediction: Prediction, grid: list[int]) -> list[list[float]]:
    assert prediction.attention is not None and len(prediction.attention) == 1
    (found,) = prediction.attention
    assert found["image"] == 0 and found["grid"] == grid
    weights: list[list[float]] = found["weights"]
    assert [len(row) for row in weights] == [grid[1]] * grid[0]
    assert abs(sum(map(sum, weights)) - 1) < 1e-3 and min(map(min, weights)) >= 0
    return weights


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_the_bundled_models_map_shows_where_the_shape_is(batching: str) -> None:
    backend = TransformersVLM(str(BUNDLED_MODEL_DIR), batching=batching)
    backend.setup("cpu")
    quiet = ask(to_rgb(shape_png("blue", "circle")), attention=False)
    explained, free = together(backend, [ask(corner_square("red"), attention=True), quiet])
    assert explained.answer == "red"
    weights = check_map(explained, [4, 4])
    # Most of the attention is on the top-left quarter of the grid, where the square is.
    assert weights[0][0] + weights[0][1] + weights[1][0] + weights[1][1] > 0.5, weights
    # The request beside it answers as it does alone, with no map.
    assert free.attention is None and free.answer == backend.predict([quiet])[0].answer
    # The map is part of the job's result.
    assert explained.result()["attention"] == explained.attention
    # Its second pass (the prompt and the answer again) is charged to its tenant; the other
    # request took none.
    answered = explained.prompt_tokens + explained.completion_tokens
    assert answered - 1 <= explained.extra_tokens <= answered + 1
    assert free.extra_tokens == 0


@pytest.mark.parametrize("architecture", ["qwen2vl", "llava"])
def test_the_other_architectures_give_a_map_too(
    architecture: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    build = {"qwen2vl": build_tiny_qwen2vl, "llava": build_tiny_llava}[architecture]
    path: Path = build(TINY_WORDS, tmp_path_factory.mktemp(architecture))
    backend = TransformersVLM(str(path))
    backend.setup("cpu")
    explained, _ = together(
        backend, [ask(corner_square("red"), attention=True), ask(corner_square("blue"), False)]
    )
    assert explained.attention is not None
    grid = explained.attention[0]["grid"]
    check_map(explained, grid)


def test_an_answer_that_says_an_image_token_still_gets_its_map(tiny_model_dir: Path) -> None:
    # The random tiny model says every kind of token, the image token among them.
    backend = TransformersVLM(str(tiny_model_dir))
    backend.setup("cpu")
    request = PredictRequest(
        conversation(to_rgb(shape_png("teal", "triangle")), "what color is the shape?"),
        GenerationParams(max_tokens=256, attention=True),
    )
    (answer,) = together(backend, [request])
    image_token = backend.model.config.image_token_id
    assert image_token in answer.token_ids, "the random model should say an image token"
    check_map(answer, answer.attention[0]["grid"] if answer.attention else [0, 0])
