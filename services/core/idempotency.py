"""`Idempotency-Key`: the same key and body give the same object, per tenant, for a while.

The key's row is inserted in the transaction that creates the object (unique per tenant
and key), so of concurrent duplicates exactly one commits; the others get an
IntegrityError, their whole transaction (the object too) rolls back, and they answer with
the object the winner made. A key used with a different body is a 422.

Any endpoint can use it the same way (`/v1/jobs`, `/v1/chat/completions`, `/v1/batches`):

    claim = claim_from_header(header, tenant_id, fingerprint(endpoint, body), settings)
    obj, replayed = submit_once(runtime, claim, create, replay)

where `create()` calls `claim.record(session, obj_id)` inside the object's transaction and
`replay(obj_id)` loads the object made earlier.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.config import Settings
from services.core.db import utcnow
from services.core.errors import ConflictError, InvalidRequestError, VlmqError
from services.core.inputs.prompts import CanonicalRequest, GenerationParams
from services.core.tables import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
T = TypeVar("T")


class IdempotencyKeyReusedError(VlmqError):
    """422: the key was used before with a different request body."""

    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotencyKeyInFlightError(ConflictError):
    """409: the request made under this key has not finished yet (synchronous calls)."""

    code = "idempotency_key_in_flight"


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's idempotency key and the fingerprint of its body."""

    tenant_id: str
    key: str
    fingerprint: str
    ttl_s: int

    def record(self, session: Session, object_id: str) -> None:
        """Store the key with the object it made, in the transaction that makes the object.

        Raises IntegrityError (now, or at commit) when a concurrent request took the key.
        """
        now = utcnow()
        # An expired key is free again: replace its row rather than trip the unique constraint.
        session.execute(
            sa.delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == self.tenant_id,
                IdempotencyKey.key == self.key,
                IdempotencyKey.expires_at <= now,
            )
        )
        session.add(
            IdempotencyKey(
                tenant_id=self.tenant_id,
                key=self.key,
                fingerprint=self.fingerprint,
                object_id=object_id,
                created_at=now,
                expires_at=now + timedelta(seconds=self.ttl_s),
            )
        )
        # Insert now, so a concurrent duplicate fails here, before anything else is written.
        session.flush()


def fingerprint(endpoint: str, request: dict[str, Any]) -> str:
    """SHA-256 of the endpoint and the canonical request (key order and spacing ignored)."""
    text = json.dumps(
        {"endpoint": endpoint, "request": request},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    # JSON may carry a lone surrogate ("\ud800"), which UTF-8 cannot encode; "surrogatepass"
    # hashes it as it came, and every other text to the same bytes as plain UTF-8.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def submission_fingerprint(
    endpoint: str, request: CanonicalRequest, params: GenerationParams, **extra: Any
) -> str:
    """The fingerprint of a model request: canonical messages (images by hash), parameters,
    and `extra` (metadata, webhook...). A multipart upload and a JSON body of the same
    image and question have the same fingerprint."""
    return fingerprint(
        endpoint,
        {"messages": request.messages, "params": params.model_dump(mode="json"), **extra},
    )


def claim_from_header(
    header: str | None, tenant_id: str, body_fingerprint: str, settings: Settings
) -> IdempotencyClaim | None:
    """The claim of a request's `Idempotency-Key` header; None without the header."""
    if header is None:
        return None
    key = header.strip()
    if not key or len(key) > MAX_KEY_CHARS or not (key.isascii() and key.isprintable()):
        raise InvalidRequestError(
            f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters", param=HEADER
        )
    return IdempotencyClaim(tenant_id, key, body_fingerprint, settings.idempotency_ttl_s)


def existing_object(session: Session, claim: IdempotencyClaim) -> str | None:
    """The id of the object made earlier under this key and body; None if the key is free.

    A live key with another fingerprint is a 422.
    """
    row = session.scalar(
        sa.select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == claim.tenant_id,
            IdempotencyKey.key == claim.key,
            IdempotencyKey.expires_at > utcnow(),
        )
    )
    if row is None:
        return None
    if row.fingerprint != claim.fingerprint:
        raise IdempotencyKeyReusedError(
            f"this {HEADER} was used with a different request", param=HEADER
        )
    return row.object_id


def submit_once(
    sessions: Callable[[], Session],
    claim: IdempotencyClaim | None,
    create: Callable[[], T],
    replay: Callable[[str], T],
) -> tuple[T, bool]:
    """`create()` the object, or `replay()` the one made earlier under the same key.

    Returns the object and whether it was replayed. `create` must call `claim.record`
    in the object's transaction; a concurrent duplicate then fails with IntegrityError,
    and this answers with the object that committed.
    """
    if claim is None:
        return create(), False
    with sessions() as session:
        object_id = existing_object(session, claim)
    if object_id is not None:
        return replay(object_id), True
    try:
        return create(), False
    except sa.exc.IntegrityError:
        with sessions() as session:
            object_id = existing_object(session, claim)
        if object_id is None:  # not our key's conflict after all
            raise
        return replay(object_id), True
