"""Screening: a job of a tenant whose moderation policy screens is answered only once its
images pass that policy.

Before the answer, each screened request's images are scored with the policy's questions
(P("yes") of each, as `/v1/moderations` scores: scoring requests of one call, a batch
chunk's lines, run together), and a request whose score reaches a category's threshold is
not answered: its outcome is `ContentFiltered`, naming the flagged categories and scores.
The others go on to the model without their screening.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.core.inputs.prompts import GenerationParams
from workers.backends.base import PredictRequest
from workers.schedulers import CallResult, Scheduler


class ContentFiltered(Exception):
    """The input was flagged by its tenant's screening policy."""

    def __init__(self, flagged: dict[str, float], thresholds: dict[str, float]) -> None:
        self.flagged = flagged
        described = ", ".join(
            f"{name} {score:.3f} (threshold {thresholds[name]:g})"
            for name, score in flagged.items()
        )
        super().__init__(f"the input was flagged by the tenant's screening policy: {described}")


def scoring_request(request: PredictRequest) -> PredictRequest:
    """The request that scores `request`'s images (alone, in one user turn: the request's own
    words would change what the questions ask) with its screening questions."""
    questions = request.params.screen_questions or {}
    images = [
        part
        for message in request.messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image"
    ]
    messages = [{"role": "user", "content": images}]
    return PredictRequest(messages, GenerationParams(score_questions=questions))


def unscreened(request: PredictRequest) -> PredictRequest:
    """The request as the model answers it, without its screening."""
    params = request.params.model_copy(
        update={"screen_questions": None, "screen_thresholds": None, "screen_policy": None}
    )
    return dataclasses.replace(request, params=params)


def run_screened(
    scheduler: Scheduler, requests: list[PredictRequest], **options: Any
) -> list[CallResult | Exception]:
    """`scheduler.run_many` (same options), with each screened request's input scored
    first: a flagged one's outcome is `ContentFiltered`, and it is never answered."""
    screened = [i for i, request in enumerate(requests) if request.params.screen_questions]
    outcomes: list[CallResult | Exception | None] = [None] * len(requests)
    if screened:
        scores = scheduler.run_many([scoring_request(requests[i]) for i in screened], **options)
        for index, score in zip(screened, scores, strict=True):
            if isinstance(score, Exception):
                outcomes[index] = score
                continue
            thresholds = requests[index].params.screen_thresholds or {}
            flagged = {
                name: value
                for name, value in (score.prediction.scores or {}).items()
                if value >= thresholds.get(name, 1.0)
            }
            if flagged:
                outcomes[index] = ContentFiltered(flagged, thresholds)
    answering = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if answering:
        answers = scheduler.run_many([unscreened(requests[i]) for i in answering], **options)
        for index, answer in zip(answering, answers, strict=True):
            outcomes[index] = answer
    return [outcome for outcome in outcomes if outcome is not None]


def run_one_screened(scheduler: Scheduler, request: PredictRequest, **options: Any) -> CallResult:
    """`scheduler.run` of one request, screened first (`run_screened`): its result, or
    the exception it failed with (`ContentFiltered` when its input was flagged)."""
    if not request.params.screen_questions:
        return scheduler.run(request, **options)
    (outcome,) = run_screened(scheduler, [request], **options)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
