"""Identifiers of vlmq objects: a type prefix and 24 random hex digits."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A new unguessable id such as `job_3f2a...`."""
    return f"{prefix}_{secrets.token_hex(12)}"
