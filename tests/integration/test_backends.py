"""The transformers backend on real (tiny, random-weight) checkpoints of two architectures."""

from __future__ import annotations

import pytest
from PIL import Image

from services.core.inputs.prompts import GenerationParams
from tests.conftest import TINY_WORDS
from tests.tiny_llava import build_tiny_llava
from workers.backends.base import PredictRequest
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.glm4v_builder import Glm4vRecipe, build_glm4v


@pytest.fixture(scope="module")
def glm(tmp_path_factory: pytest.TempPathFactory) -> TransformersVLM:
    """A tiny GLM-4V whose tokenizer puts spaces between its words (as a word-level
    tokenizer usually does): these tests read its answers word by word."""
    recipe = Glm4vRecipe(words=TINY_WORDS, seed=0)
    backend = TransformersVLM(str(build_glm4v(recipe, tmp_path_factory.mktemp("glm"))))
    backend.setup("cpu")
    return backend


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory) -> TransformersVLM:
    backend = TransformersVLM(str(build_tiny_llava(TINY_WORDS, tmp_path_factory.mktemp("llava"))))
    backend.setup("cpu")
    return backend


def make_request(color: str, question: str, **params: object) -> PredictRequest:
    image = Image.new("RGB", (64, 64), color)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
        }
    ]
    return PredictRequest(messages, GenerationParams(**params))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["glm", "llava"])
def test_batched_answers_equal_one_at_a_time(name: str, request: pytest.FixtureRequest) -> None:
    backend: TransformersVLM = request.getfixturevalue(name)
    batch = [
        make_request("red", "what color is the shape?", max_tokens=6),
        make_request("blue", "is there a circle?", max_tokens=6),
        make_request("green", "what shape is in the image?", max_tokens=6),
    ]
    together = backend.predict(batch)
    alone = [backend.predict([item])[0] for item in batch]
    assert [p.raw for p in together] == [p.raw for p in alone]
    for prediction in together:
        assert prediction.prompt_tokens > 0 and 0 < prediction.completion_tokens <= 6
        assert "<|endoftext|>" not in prediction.answer and "</s>" not in prediction.answer


def test_mixed_parameters_each_get_what_they_asked(glm: TransformersVLM) -> None:
    batch = [
        make_request("red", "what color?", max_tokens=2),
        make_request("red", "what color?", max_tokens=7),
    ]
    short, long = glm.predict(batch)
    assert short.completion_tokens <= 2 and long.completion_tokens <= 7
    assert short.finish_reason in ("length", "stop")


def test_glm_thinking_switch_changes_the_prompt(glm: TransformersVLM) -> None:
    messages = make_request("red", "what color?").messages
    off = glm.encode([messages], GenerationParams(enable_thinking=False))["input_ids"][0].tolist()
    on = glm.encode([messages], GenerationParams(enable_thinking=True))["input_ids"][0].tolist()
    tokens_off = glm.processor.tokenizer.convert_ids_to_tokens(off)
    tokens_on = glm.processor.tokenizer.convert_ids_to_tokens(on)
    assert tokens_off[:2] == ["[gMASK]", "<sop>"]
    assert "/nothink" in tokens_off and tokens_off[-2:] == ["<think>", "</think>"]
    assert "/nothink" not in tokens_on and tokens_on[-1] == "<|assistant|>"


def test_stop_strings_cut_the_answer(glm: TransformersVLM) -> None:
    full = glm.predict([make_request("red", "what color?", max_tokens=8)])[0]
    words = full.raw.split()
    if len(words) < 2:
        pytest.fail(f"the random model should say more than one word: {full.raw!r}")
    cut = glm.predict([make_request("red", "what color?", max_tokens=8, stop=[words[1]])])[0]
    assert words[1] not in cut.raw and cut.finish_reason == "stop"


def test_yes_probability_is_a_probability_and_batch_independent(glm: TransformersVLM) -> None:
    batch = [
        make_request("red", "is there a circle?"),
        make_request("blue", "is the shape blue?"),
        make_request("green", "does the image not contain a triangle?"),
    ]
    together = glm.yes_probability(batch)
    alone = [glm.yes_probability([item])[0] for item in batch]
    assert all(0.0 <= p <= 1.0 for p in together)
    assert together == pytest.approx(alone, abs=1e-5)


def test_moderation_scores_each_category(glm: TransformersVLM) -> None:
    questions = {"circle": "is there a circle?", "red": "is the shape red?"}
    params = GenerationParams(max_tokens=1, score_questions=questions)
    image_only = [{"role": "user", "content": [make_request("red", "").messages[0]["content"][0]]}]
    scored = glm.predict([PredictRequest(image_only, params)])[0]
    assert scored.scores is not None and set(scored.scores) == {"circle", "red"}
    direct = glm.yes_probability([make_request("red", "is there a circle?")])[0]
    assert scored.scores["circle"] == pytest.approx(direct, abs=1e-5)
