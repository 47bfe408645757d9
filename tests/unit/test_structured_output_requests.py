"""Structured output requests: every spelling becomes one canonical grammar, and a grammar
the worker could not compile, or one too large, is a 400 naming the field before anything
is queued."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.grammars import Grammar
from services.core.requests.base import parse
from services.core.requests.generation import generation_params
from services.core.requests.responses import ResponseCreateRequest

SCHEMA = {
    "type": "object",
    "properties": {"color": {"type": "string", "enum": ["red", "blue"]}},
    "required": ["color"],
    "additionalProperties": False,
}


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def grammar_of(body: dict[str, Any], config: Settings | None = None) -> Grammar | None:
    return generation_params(body, config or settings()).grammar


def refusal(body: dict[str, Any], config: Settings | None = None) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as refused:
        generation_params(body, config or settings())
    return refused.value


def test_every_spelling_of_a_schema_is_one_grammar() -> None:
    openai_format = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    expected = Grammar(kind="json_schema", value=json.dumps(SCHEMA, separators=(",", ":")))
    assert grammar_of({"response_format": openai_format}) == expected
    assert grammar_of({"guided_json": SCHEMA}) == expected
    responses = parse(
        ResponseCreateRequest,
        {"input": "q", "text": {"format": {"type": "json_schema", "name": "a", "schema": SCHEMA}}},
        settings(),
    )
    assert responses.to_params(settings()).grammar == expected
    # The schema's property order is kept: the answer's fields come out in that order.
    reordered = {"properties": {"b": {}, "a": {}}, "type": "object"}
    assert grammar_of({"guided_json": reordered}) == Grammar(
        kind="json_schema", value='{"properties":{"b":{},"a":{}},"type":"object"}'
    )


def test_json_object_choice_regex_and_text() -> None:
    assert grammar_of({"response_format": {"type": "json_object"}}) == Grammar(kind="json_object")
    assert grammar_of({"guided_choice": ["yes", "no"]}) == Grammar(
        kind="choice", value='["yes","no"]'
    )
    assert grammar_of({"guided_regex": "[0-9]+"}) == Grammar(kind="regex", value="[0-9]+")
    assert grammar_of({"response_format": {"type": "text"}}) is None
    assert grammar_of({}) is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"guided_json": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}, ""),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_json": [1, 2]}, "guided_json"),
        ({"guided_choice": ["a"], "guided_regex": "b"}, "guided_regex"),
        ({"response_format": {"type": "json_object"}, "guided_choice": ["a"]}, "guided_choice"),
        ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos"),
        ({"guided_choice": ["a"], "min_tokens": 2}, "min_tokens"),
    ],
)
def test_what_cannot_be_constrained_is_a_400_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    refused = refusal(body)
    assert refused.param is not None and param in refused.param


def test_a_grammar_over_the_size_limit_is_refused_by_name() -> None:
    big = {"type": "object", "properties": {f"field_{n}": {"type": "string"} for n in range(400)}}
    refused = refusal({"guided_json": big}, settings(max_grammar_bytes=4096))
    assert refused.code == "grammar_too_large" and refused.param == "guided_json"
    assert "4096" in refused.message
    assert grammar_of({"guided_json": big}, settings(max_grammar_bytes=65536)) is not None
