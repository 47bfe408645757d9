"""The model plug-in interface: `setup(device)` once, then `predict(batch)` many times."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from services.core.inputs.prompts import GenerationParams

# A generated token's log-probability in OpenAI's shape (see `workers.backends.logprobs`).
TokenLogprob = dict[str, Any]
# Called with each new piece of visible text, and the log-probabilities of the tokens that
# made it (empty unless the request asked for them).
TextCallback = Callable[[str, list[TokenLogprob]], None]


@dataclass(frozen=True)
class PredictRequest:
    """One request in Hugging Face chat format: image parts carry decoded PIL images."""

    messages: list[dict[str, Any]]
    params: GenerationParams
    # Streaming requests: called as the answer's text is generated.
    on_text: TextCallback | None = None
    # The LoRA adapter to answer with (its `VLMQ_LORA_MODULES` name); None: the base model.
    adapter: str | None = None


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
    # The answer's tokens with their log-probabilities, when the request asked for them.
    logprobs: list[TokenLogprob] | None = None
    # The answer's token ids (its end token left out).
    token_ids: list[int] = field(default_factory=list)
    # Where the answer looked, per image, when the request asked (see `AttentionMap`).
    attention: list[dict[str, Any]] | None = None
    # Tokens of the model passes the answer took besides its own prompt and completion (its
    # attention map's second pass, its input's screening): fair queuing charges them too.
    extra_tokens: int = 0

    def result(self) -> dict[str, Any]:
        """The job's `result` field."""
        if self.scores is not None:
            return {"scores": self.scores, "usage": {"prompt_tokens": self.prompt_tokens}}
        result: dict[str, Any] = {
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
        if self.attention is not None:
            result["attention"] = self.attention
        if self.logprobs is not None:
            result["logprobs"] = {"content": self.logprobs}
            # The mean probability of the answer's tokens.
            result["confidence"] = mean_probability(self.logprobs)
        return result


def mean_probability(entries: list[TokenLogprob]) -> float | None:
    """The mean probability of the tokens (None for no tokens)."""
    if not entries:
        return None
    return sum(math.exp(entry["logprob"]) for entry in entries) / len(entries)


class VLMBackend(Protocol):
    """A vision-language model that a worker serves."""

    def setup(self, device: str) -> None:
        """Load weights onto `device`; called once per worker process, before any predict."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Answer every request of the batch, in order."""
        ...


@dataclass(frozen=True)
class Generation:
    """A request that left the engine's batch with its answer."""

    key: object
    prediction: Prediction
    # The most requests that shared a model call with it (itself included).
    batch_size: int


class DecodeEngine(Protocol):
    """Continuous batching: requests join the running batch (prefill) and leave it as they
    finish, one decode step for every active request at a time.

    Rows are named by the caller's keys. Not thread-safe: one thread drives it.
    """

    def accepts(self, request: PredictRequest) -> bool:
        """Whether this request can run in the engine (others take `predict`)."""
        ...

    def admit(self, requests: list[tuple[object, PredictRequest]]) -> list[Generation]:
        """Run the requests' prompts (together) and pick each one's first token: those it
        finished already are returned, the others joined the batch. After an error, none
        of them joined."""
        ...

    def step(self) -> list[Generation]:
        """Decode one token for every request in the batch; those that finished left it."""
        ...

    def drop(self, key: object) -> None:
        """Take a request out of the batch unfinished (canceled, or past its time limit)."""

    def clear(self) -> None:
        """Take every request out (after a failed step)."""

    def __len__(self) -> int:
        """How many requests are in the batch."""
        ...


@runtime_checkable
class ContinuousBackend(VLMBackend, Protocol):
    """A backend that also offers continuous batching (`create_scheduler` checks for it)."""

    def continuous_engine(self) -> DecodeEngine | None:
        """The engine, or None where the model runs static batches only (after `setup`)."""
        ...
