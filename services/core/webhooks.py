"""Webhooks: Standard Webhooks signing, scheduling of job and batch events, delivery."""

from __future__ import annotations

from services.core.runtime import Runtime


def on_job_event(runtime: Runtime, job_id: str, event: str) -> None:
    """Schedule the job's webhook for `event` ("start" or "completed"), if it asked for one."""
