"""What a job is made from before it exists: the canonical request, its parameters, and how
it is submitted. Every way of asking (a route, a batch line, a moderation input) becomes a
`JobSpec`, and `services.core.submit` turns specs into jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.core.bands import Band
from services.core.inputs.prompts import CanonicalRequest, GenerationParams


@dataclass(frozen=True)
class SubmitOptions:
    """Everything about a submission besides the request and its generation parameters."""

    kind: str = "job"
    # The model that answers: the base model's id (empty: the same) or a LoRA adapter's.
    model: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    webhook: str | None = None
    webhook_events: list[str] | None = None
    batch_id: str | None = None
    custom_id: str | None = None
    # Its priority band (batch lines: `Band.BATCH`), and how long it may wait to start
    # (None: no limit).
    band: Band = Band.DEFAULT
    max_queue_ms: int | None = None
    moderation: dict[str, Any] | None = None
    # Responses API jobs: what the response object echoes (`background`, `store`, …).
    response: dict[str, Any] | None = None

    @property
    def background(self) -> bool:
        """Whether it is batch work (a batch line)."""
        return self.band == Band.BATCH


@dataclass(frozen=True)
class JobSpec:
    """One job to create: what is asked, how to generate, how it is submitted."""

    request: CanonicalRequest
    params: GenerationParams
    options: SubmitOptions = field(default_factory=SubmitOptions)
    # The tokens it may cost (prompt plus `max_tokens`), once checked against the context.
    cost_tokens: int = 0

    def fingerprint_fields(self) -> dict[str, Any]:
        """What makes two submissions the same request (for `Idempotency-Key`): canonical
        messages (images by hash), parameters, and the options a client chose."""
        return {
            "messages": self.request.messages,
            # Screening is the tenant's, not the request's: a retry after a policy change
            # is the same request.
            "params": self.params.model_dump(
                mode="json", exclude={"screen_questions", "screen_thresholds", "screen_policy"}
            ),
            "kind": self.options.kind,
            "model": self.options.model,
            "metadata": self.options.metadata,
            "stream": self.options.stream,
            "webhook": self.options.webhook,
            "webhook_events": self.options.webhook_events,
            "response": self.options.response,
        }
