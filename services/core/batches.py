"""Batches in the OpenAI Batch API shape: expand an input file into jobs, track, finalize."""

from __future__ import annotations

from services.core.runtime import Runtime


def on_job_finished(runtime: Runtime, job_id: str) -> None:
    """A job reached a terminal state: if it belongs to a batch, advance the batch."""
