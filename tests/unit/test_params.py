"""Generation parameters: checked at submit, before anything is stored or run."""

from __future__ import annotations

import pytest

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.requests.generation import generation_params


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
