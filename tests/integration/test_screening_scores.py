"""Screening in the worker (`workers.screening`) on the suite's real Redis: a flagged
request is never answered, the others are answered without their screening, and scores
are cached like any score, so the same images under the same policy are scored once."""

from __future__ import annotations

import secrets
from typing import Any

from services.core.inputs.prompts import GenerationParams
from services.core.runtime import Runtime
from workers.backends.base import Prediction, PredictRequest
from workers.schedulers import CallResult
from workers.screening import ContentFiltered, run_screened


class FakeScoringScheduler:
    """Stands in for the model's scheduler: scores are P("yes") = 0.9 for a request whose
    image part says "red", 0.1 otherwise; answers are "answered"; it counts its calls."""

    def __init__(self) -> None:
        self.scored = 0
        self.answered: list[PredictRequest] = []

    def run_many(self, requests: list[PredictRequest], **_: Any) -> list[CallResult]:
        results = []
        for request in requests:
            if request.params.score_questions:
                self.scored += 1
                red = "red" in str(request.messages)
                scores = {name: 0.9 if red else 0.1 for name in request.params.score_questions}
                scoring = Prediction(answer="", raw="", scores=scores, prompt_tokens=7)
                results.append(CallResult(scoring, 1))
            else:
                self.answered.append(request)
                results.append(CallResult(Prediction(answer="answered", raw="answered"), 1))
        return results


def screened(color: str) -> PredictRequest:
    return PredictRequest(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": color}, {"type": "text", "text": "q"}],
            }
        ],
        GenerationParams(screen_questions={"red": "is it red?"}, screen_thresholds={"red": 0.5}),
    )


def test_flagged_requests_are_not_answered_and_scores_are_cached(runtime: Runtime) -> None:
    scheduler = FakeScoringScheduler()
    keys = [f"vlmq:cache:test-screen-{secrets.token_hex(4)}" for _ in range(2)]
    outcomes = run_screened(
        scheduler,  # type: ignore[arg-type]
        [screened("red"), screened("blue")],
        runtime=runtime,
        keys=keys,
        company=8,
        time_limit_s=30,
    )
    assert isinstance(outcomes[0], ContentFiltered) and outcomes[0].flagged == {"red": 0.9}
    assert isinstance(outcomes[1], CallResult) and outcomes[1].prediction.answer == "answered"
    # The answer ran without its screening.
    (answered,) = scheduler.answered
    assert answered.params.screen_questions is None and scheduler.scored == 2
    # Its screening pass is charged to its tenant with the answer.
    assert outcomes[1].prediction.extra_tokens == 7
    again = run_screened(
        scheduler,  # type: ignore[arg-type]
        [screened("red"), screened("blue")],
        runtime=runtime,
        keys=keys,
        company=8,
        time_limit_s=30,
    )
    assert isinstance(again[0], ContentFiltered) and isinstance(again[1], CallResult)
    assert scheduler.scored == 2, "the second time, the scores came from the cache"
    assert again[1].prediction.extra_tokens == 0, "scores from the cache cost no model time"
