"""Tenants and API keys. Keys are shown once and stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import audit
from services.core.config import Settings
from services.core.db import utcnow
from services.core.errors import AuthenticationError
from services.core.ids import new_id
from services.core.quota import unfinished_interactive_work
from services.core.tables import ApiKey, Tenant

KEY_PREFIX = "vlmq-"
LAST_USED_RESOLUTION_S = 60
LAST_USED_RESOLUTION = timedelta(seconds=LAST_USED_RESOLUTION_S)


def hash_key(key: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created if it does not exist yet."""
    tenant = session.scalar(sa.select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=new_id("ten"), name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, tenant_name: str, label: str | None = None) -> str:
    """Create a key for the tenant (creating the tenant if needed); returns the plain key once."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    session.add(
        ApiKey(id=key_id, tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:12], label=label)
    )
    audit.record(
        session,
        audit.Actor(audit.OPERATOR),
        "api_key.created",
        tenant_id=tenant.id,
        target=key_id,
        details={"label": label},
    )
    session.flush()
    return key


@dataclass(frozen=True)
class KeyInfo:
    """What an operator sees of a key: never the key itself."""

    id: str
    tenant: str
    prefix: str
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def list_keys(session: Session, tenant_name: str | None = None) -> list[KeyInfo]:
    """The keys (of one tenant, or all), oldest first."""
    query = (
        sa.select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [key_info(key, name) for key, name in session.execute(query)]


def revoke_key(session: Session, key_or_id: str) -> KeyInfo | None:
    """Revoke a key named by its id or by the key itself; None if there is no such key.

    Every API process reads the key's row on each request, so the key is refused at once.
    """
    condition = sa.or_(ApiKey.id == key_or_id, ApiKey.key_hash == hash_key(key_or_id))
    key = session.scalar(sa.select(ApiKey).where(condition))
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(
            session,
            audit.Actor(audit.OPERATOR),
            "api_key.revoked",
            tenant_id=key.tenant_id,
            target=key.id,
        )
        session.flush()
    tenant = session.get(Tenant, key.tenant_id)
    return key_info(key, tenant.name if tenant else "")


def key_info(key: ApiKey, tenant_name: str) -> KeyInfo:
    """What an operator sees of a stored key."""
    return KeyInfo(
        key.id,
        tenant_name,
        key.prefix,
        key.label,
        key.created_at,
        key.last_used_at,
        key.revoked_at,
    )


def bearer_key(authorization: str | None) -> str:
    """The key of an `Authorization: Bearer <key>` header; a 401 for a header without one."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    return authorization[7:].strip()


# The live key of a hash (bound as `key_hash`): its id, tenant id, last use, and whether the
# tenant screens its inputs. Built once, like `LIVE_KEY_WITH_WORK`: every request runs one,
# and a statement built per request costs its construction and its SQL cache key each time.
LIVE_KEY = (
    sa.select(ApiKey.id, ApiKey.tenant_id, ApiKey.last_used_at, Tenant.screen_inputs)
    .join(Tenant, Tenant.id == ApiKey.tenant_id)
    .where(ApiKey.key_hash == sa.bindparam("key_hash"), ApiKey.revoked_at.is_(None))
)
# `LIVE_KEY` and the tenant's unfinished interactive jobs and their tokens, in one read.
LIVE_KEY_WITH_WORK = LIVE_KEY.add_columns(*unfinished_interactive_work(ApiKey.tenant_id))


def is_live_key(session: Session, key: str) -> bool:
    """Whether `key` exists and is not revoked."""
    return session.execute(LIVE_KEY, {"key_hash": hash_key(key)}).first() is not None


def note_use(session: Session, key_id: str, last_used_at: datetime | None) -> None:
    """Record that the key was used now, at most once per `LAST_USED_RESOLUTION_S` (a write
    per request would cost every request a statement)."""
    now = utcnow()
    if last_used_at is not None and now - last_used_at < LAST_USED_RESOLUTION:
        return
    session.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    session.commit()


@dataclass(frozen=True)
class Caller:
    """Who sent a request: its tenant, and (for a route that creates interactive jobs) how
    many of the tenant's interactive jobs were unfinished, read with the key."""

    tenant_id: str
    unfinished_jobs: int = 0
    # The tokens those jobs may cost (prompt plus `max_tokens` each).
    unfinished_tokens: int = 0
    # The id of the key it authenticated with (what the audit log names it by).
    key_id: str = ""
    # Whether its tenant's moderation policy screens every job (read with the key).
    screens_inputs: bool = False


def authenticate(
    session: Session, authorization: str | None, settings: Settings, *, count_jobs: bool = False
) -> Caller:
    """The caller owning the bearer key of an `Authorization` header, or a 401. With
    `count_jobs`, its unfinished interactive jobs are counted in the same read, so a
    submission is authenticated and checked against its quota at once."""
    key_hash = hash_key(bearer_key(authorization))
    counted = count_jobs and (
        settings.tenant_max_queued > 0 or settings.tenant_max_queued_tokens > 0
    )
    query = LIVE_KEY_WITH_WORK if counted else LIVE_KEY
    row = session.execute(query, {"key_hash": key_hash}).first()
    if row is None:
        raise AuthenticationError("invalid API key")
    note_use(session, row.id, row.last_used_at)
    screens = bool(row.screen_inputs)
    if not counted:
        return Caller(str(row.tenant_id), key_id=str(row.id), screens_inputs=screens)
    return Caller(
        str(row.tenant_id),
        int(row[4] or 0),
        int(row[5] or 0),
        key_id=str(row.id),
        screens_inputs=screens,
    )
