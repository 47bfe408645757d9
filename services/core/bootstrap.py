"""The composition root of the domain: a process's `Runtime`, with the consequences of
outbox events (`effects.dispatch`) wired into every unit of work.

The edges (the Flask app, the workers, the CLI, the tests) build their runtime here, once.
"""

from __future__ import annotations

from services.core.config import Settings
from services.core.effects import dispatch
from services.core.runtime import Runtime


def create_runtime(settings: Settings) -> Runtime:
    """The runtime of one process for `settings` (nothing is dialed until first use)."""
    return Runtime.create(settings, on_events=dispatch)
