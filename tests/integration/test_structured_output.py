"""Constrained decoding on the bundled model, in both batching paths: rows under different
grammars and free rows share one model call, each constrained answer follows its grammar,
the free rows answer as they would alone, and the JSON adapter's fields are as right as the
plain answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema_rs
import pytest

from services.core.config import BUNDLED_MODEL_DIR, JSON_ADAPTER_DIR, JSON_ADAPTER_NAME
from services.core.inputs.grammars import Grammar, choice_grammar, schema_grammar
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from tests.support import shape_png
from workers.backends.base import Prediction, PredictRequest
from workers.backends.continuous import ContinuousEngine
from workers.backends.grammar import UnconstrainableTokenizer
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import conversation
from workers.models.glm4v_builder import Glm4vRecipe, build_glm4v
from workers.models.train_easyvqa import SHAPES
from workers.models.train_easyvqa_json import answer_schema, evaluate_json, test_images

COLOURS = ["black", "blue", "brown", "gray", "green", "red", "teal", "yellow"]
SHAPE_FIRST = {
    "type": "object",
    "properties": {"shape": {"type": "string", "enum": list(SHAPES)}},
    "required": ["shape"],
    "additionalProperties": False,
}
REGEX = "[0-9]{3}-[a-z]+"
CHOICES = ["yes", "no", "maybe"]


@pytest.fixture(scope="module", params=["static", "continuous"])
def bundled(request: pytest.FixtureRequest) -> TransformersVLM:
    """The bundled model with its JSON adapter, in one batching path."""
    backend = TransformersVLM(
        str(BUNDLED_MODEL_DIR),
        batching=request.param,
        adapters={JSON_ADAPTER_NAME: str(JSON_ADAPTER_DIR)},
    )
    backend.setup("cpu")
    return backend


def ask(
    colour: str, question: str, grammar: Grammar | None = None, **params: object
) -> PredictRequest:
    adapter = JSON_ADAPTER_NAME if grammar is not None and grammar.is_json else None
    return PredictRequest(
        conversation(to_rgb(shape_png(colour)), question),
        GenerationParams.model_validate({"max_tokens": 48, **params, "grammar": grammar}),
        adapter=adapter,
    )


def run_together(backend: TransformersVLM, requests: list[PredictRequest]) -> list[Prediction]:
    """The requests in one model call (one prefill, then shared decode steps)."""
    engine = backend.continuous_engine()
    if engine is None:
        return backend.predict(requests)
    assert isinstance(engine, ContinuousEngine)
    finished = engine.admit(list(enumerate(requests)))
    while len(engine):
        finished += engine.step()
    assert max(generation.batch_size for generation in finished) == len(requests)
    return [generation.prediction for generation in sorted(finished, key=lambda g: int(g.key))]  # type: ignore[call-overload]


def test_rows_under_different_grammars_and_free_rows_share_a_call(
    bundled: TransformersVLM,
) -> None:
    both = schema_grammar(answer_schema(COLOURS), "schema", 16384)
    shape_only = schema_grammar(SHAPE_FIRST, "schema", 16384)
    requests = [
        ask("red", "what color is the shape?", both),
        ask("blue", "what shape is in the image?", shape_only),
        ask("green", "is there a circle?", choice_grammar(CHOICES, "choice", 1024)),
        ask("red", "what?", Grammar(kind="regex", value=REGEX)),
        ask("teal", "what color is the shape?", Grammar(kind="json_object")),
        ask("yellow", "what color is the shape?"),
        ask("gray", "is there a triangle?"),
    ]
    answers = run_together(bundled, requests)
    first = json.loads(answers[0].answer)
    assert jsonschema_rs.validator_for(answer_schema(COLOURS)).is_valid(first)
    assert first["color"] == "red"
    assert jsonschema_rs.validator_for(SHAPE_FIRST).is_valid(json.loads(answers[1].answer))
    assert answers[2].answer in CHOICES
    assert re.fullmatch(REGEX, answers[3].answer)
    assert isinstance(json.loads(answers[4].answer), dict)
    # The free rows answer exactly as they do alone.
    for together, request in zip(answers[5:], requests[5:], strict=True):
        assert together.answer == bundled.predict([request])[0].answer
    assert all(answer.finish_reason == "stop" for answer in answers)


def test_json_cut_by_max_tokens_finishes_with_length(bundled: TransformersVLM) -> None:
    grammar = schema_grammar(answer_schema(COLOURS), "schema", 16384)
    cut = run_together(
        bundled, [ask("red", "what color is the shape?", grammar, max_tokens=4), ask("red", "q")]
    )[0]
    assert cut.finish_reason == "length" and cut.completion_tokens == 4
    with pytest.raises(ValueError):
        json.loads(cut.answer)


def test_the_json_adapter_is_as_right_as_the_plain_answers_on_held_out_images(
    bundled: TransformersVLM,
) -> None:
    result = evaluate_json(bundled, test_images(limit=60), COLOURS)
    assert result["valid"] == 1.0
    for field in ("color", "shape"):
        assert result["json"][field] >= 0.95 * result["plain"][field], result


def test_a_tokenizer_that_spaces_its_words_cannot_be_constrained(tmp_path: Path) -> None:
    spaced = TransformersVLM(str(build_glm4v(Glm4vRecipe(words=["red"]), tmp_path)))
    spaced.setup("cpu")
    with pytest.raises(UnconstrainableTokenizer, match="spaces between its words"):
        spaced.grammars.matcher(Grammar(kind="json_object"))
