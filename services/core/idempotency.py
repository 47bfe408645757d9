"""`Idempotency-Key`: the same key and body give the same object, per tenant, for a while."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's idempotency key and the fingerprint of its body."""

    tenant_id: str
    key: str
    fingerprint: str
    ttl_s: int

    def record(self, session: Session, object_id: str) -> None:
        """Store the key with the object it made, in the transaction that makes the object."""
