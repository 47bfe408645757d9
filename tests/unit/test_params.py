"""Generation parameters: checked at submit, before anything is stored or run."""

from __future__ import annotations

import pytest

from services.core.config import Settings
from services.core.errors import InvalidRequestError
from services.core.inputs.prompts import build_params


@pytest.mark.parametrize("seed", [2**63, -(2**63) - 1, 10**30])
def test_a_seed_outside_64_bits_is_a_400_before_anything_runs(seed: int) -> None:
    with pytest.raises(InvalidRequestError, match="seed"):
        build_params({"seed": seed}, Settings(_env_file=None))  # type: ignore[call-arg]


def test_a_64_bit_seed_is_accepted() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert build_params({"seed": 2**63 - 1}, settings).seed == 2**63 - 1
