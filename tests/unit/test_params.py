"""Generation parameters: checked at submit, before anything is stored or run."""

from __future__ import annotations

import pytest

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.prompts import CanonicalRequest, GenerationParams, check_fits_context
from services.core.requests.base import parse
from services.core.requests.generation import generation_params
from services.core.requests.jobs import JobCreateRequest


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 10**30])
def test_a_seed_outside_64_bits_is_a_400_before_anything_runs(seed: int) -> None:
    with pytest.raises(InvalidRequestError, match="seed"):
        generation_params({"seed": seed}, Settings(_env_file=None))  # type: ignore[call-arg]


def test_a_64_bit_seed_is_accepted() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert generation_params({"seed": 2**63 - 1}, settings).seed == 2**63 - 1


def test_vllm_length_extensions_are_read_and_checked() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    params = generation_params({"max_tokens": 8, "min_tokens": 8, "ignore_eos": True}, settings)
    assert (params.min_tokens, params.ignore_eos) == (8, True)
    assert (
        generation_params({}, settings).min_tokens,
        generation_params({}, settings).ignore_eos,
    ) == (
        0,
        False,
    )
    with pytest.raises(InvalidRequestError) as refused:
        generation_params({"max_tokens": 4, "min_tokens": 5}, settings)
    assert refused.value.param == "min_tokens"
    with pytest.raises(InvalidRequestError) as negative:
        generation_params({"min_tokens": -1}, settings)
    assert negative.value.param == "min_tokens"


def test_stop_strings_and_metadata_are_bounded() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert generation_params({"stop": ["x" * 256]}, settings).stop == ["x" * 256]
    for stop in ["x" * 257, ["ok", "x" * 257]]:
        with pytest.raises(InvalidRequestError) as refused:
            generation_params({"stop": stop}, settings)
        assert refused.value.param == "stop"
    body = {"image": "data:,", "question": "q"}
    parse(JobCreateRequest, {**body, "metadata": {"k" * 64: "v" * 512}}, settings)
    for metadata in [{"k" * 65: "v"}, {"k": "v" * 513}, {f"k{n}": "v" for n in range(17)}]:
        with pytest.raises(InvalidRequestError) as refused:
            parse(JobCreateRequest, {**body, "metadata": metadata}, settings)
        assert refused.value.param and refused.value.param.startswith("metadata")


def test_a_scoring_request_must_fit_the_context_with_its_longest_question() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    request = CanonicalRequest([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], [])
    short = GenerationParams(max_tokens=1, score_questions={"a": "is it red?"})
    long = GenerationParams(max_tokens=1, score_questions={"a": "q?", "b": "is it red? " * 4000})
    assert check_fits_context(request, short, settings) > 0
    with pytest.raises(InvalidRequestError, match="context"):
        check_fits_context(request, long, settings)
