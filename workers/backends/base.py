"""The model plug-in interface: `setup(device)` once, then `predict(batch)` many times."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.core.inputs.prompts import GenerationParams


@dataclass(frozen=True)
class PredictRequest:
    """One request in Hugging Face chat format: image parts carry decoded PIL images."""

    messages: list[dict[str, Any]]
    params: GenerationParams
    # Called with each new piece of visible text while generating (streaming requests).
    on_text: Callable[[str], None] | None = None


@dataclass(frozen=True)
class GenerationTiming:
    """When a generation's tokens came, measured by the backend (seconds)."""

    # From the start of the model call to the request's first generated token.
    first_token_s: float
    # From the first generated token to the last.
    decode_s: float


@dataclass(frozen=True)
class Prediction:
    """What the model produced for one request."""

    answer: str
    raw: str
    reasoning: str | None = None
    boxes: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    # Moderation: P("yes") of each category question.
    scores: dict[str, float] | None = None
    # Token timing, for backends that measure it (it feeds the latency metrics only).
    timing: GenerationTiming | None = None

    def result(self) -> dict[str, Any]:
        """The job's `result` field."""
        if self.scores is not None:
            return {"scores": self.scores, "usage": {"prompt_tokens": self.prompt_tokens}}
        return {
            "answer": self.answer,
            "reasoning": self.reasoning,
            "boxes": self.boxes,
            "raw": self.raw,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }


class VLMBackend(Protocol):
    """A vision-language model that a worker serves."""

    def setup(self, device: str) -> None:
        """Load weights onto `device`; called once per worker process, before any predict."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Answer every request of the batch, in order."""
        ...
