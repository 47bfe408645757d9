"""What fair queuing charges a tenant for an answer: every model token it took."""

from __future__ import annotations

from workers.outcomes import tokens_served

RESULT = {"usage": {"prompt_tokens": 30, "completion_tokens": 4}}


def test_an_answer_costs_its_prompt_and_completion_and_its_other_passes() -> None:
    assert tokens_served(RESULT) == 34
    # An attention map's second pass or a screening pass: charged with the answer.
    assert tokens_served(RESULT, extra=36) == 70


def test_an_answer_from_the_cache_costs_nothing() -> None:
    assert tokens_served(RESULT, cache_hit=True, extra=36) == 0
