"""Structured output: the grammar a request's answer must follow, checked before it is queued.

A request asks for one with OpenAI's `response_format` (`json_object`, or `json_schema`
with its schema) or the Responses API's `text.format`, or with vLLM's `guided_choice` /
`guided_regex`. It becomes a `Grammar` in the job's `GenerationParams` (so it is part of the
cache key), and the worker constrains decoding to it (`workers.backends.grammar`).
Everything a worker would fail on is found here first, with llguidance itself (the library
the worker masks with, without a tokenizer): a grammar that does not compile, or one over
the deployment's size limit, is a `400` naming the field.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

import llguidance
from pydantic import BaseModel, ConfigDict

from services.core.errors import InvalidRequestError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

GrammarKind = Literal["json_schema", "json_object", "regex", "choice"]
# The kinds whose answers are JSON (a deployment may answer them with a JSON adapter).
JSON_KINDS = frozenset({"json_schema", "json_object"})
# "Any JSON object", as OpenAI's `json_object` promises.
ANY_OBJECT_SCHEMA = '{"type":"object"}'
# JSON without optional whitespace: `{"a":1,"b":[2,3]}` (the fewest tokens to decode).
COMPACT_JSON: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
}


class Grammar(BaseModel):
    """The constraint on an answer's text, in canonical form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: GrammarKind
    # json_schema: the schema as compact JSON (its properties in the order given: they
    # come out in that order); regex: the pattern; choice: a JSON list of the strings.
    value: str = ""

    @property
    def is_json(self) -> bool:
        """Whether the answer is JSON."""
        return self.kind in JSON_KINDS


def llguidance_grammar(grammar: Grammar) -> str:
    """The grammar in llguidance's terms (what `LLMatcher` compiles)."""
    if grammar.kind == "json_schema":
        return llguidance.LLMatcher.grammar_from_json_schema(grammar.value, defaults=COMPACT_JSON)
    if grammar.kind == "json_object":
        return llguidance.LLMatcher.grammar_from_json_schema(
            ANY_OBJECT_SCHEMA, defaults=COMPACT_JSON
        )
    if grammar.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(grammar.value)
    return llguidance.grammar_from("choice", grammar.value)


def checked_grammar(grammar: Grammar, param: str, max_bytes: int) -> Grammar:
    """`grammar` if it compiles and is within `max_bytes`; else a `400` naming `param`."""
    size = len(grammar.value.encode("utf-8"))
    if size > max_bytes:
        raise InvalidRequestError(
            f"{param} is {size} bytes, over this deployment's limit of {max_bytes} "
            "(VLMQ_MAX_GRAMMAR_BYTES)",
            code="grammar_too_large",
            param=param,
        )
    try:
        error = llguidance.LLMatcher.validate_grammar(llguidance_grammar(grammar))
    except ValueError as exc:  # not a JSON object, where one was needed
        error = str(exc)
    if error:
        raise InvalidRequestError(f"{param} cannot be compiled: {error}", param=param)
    return grammar


def schema_grammar(schema: object, param: str, max_bytes: int) -> Grammar:
    """The grammar of a JSON schema (an object), checked."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} must be a JSON schema (an object)", param=param)
    value = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    return checked_grammar(Grammar(kind="json_schema", value=value), param, max_bytes)


def choice_grammar(choices: list[str], param: str, max_bytes: int) -> Grammar:
    """The grammar of a fixed list of answers, checked."""
    if not choices:
        raise InvalidRequestError(f"{param} must name at least one choice", param=param)
    value = json.dumps(choices, separators=(",", ":"), ensure_ascii=False)
    return checked_grammar(Grammar(kind="choice", value=value), param, max_bytes)
