"""Tenants and API keys. Keys are shown once and stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.errors import AuthenticationError
from services.core.ids import new_id
from services.core.models import ApiKey, Tenant

KEY_PREFIX = "vlmq-"


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
    session.add(
        ApiKey(
            id=new_id("key"),
            tenant_id=tenant.id,
            key_hash=hash_key(key),
            prefix=key[:12],
            label=label,
        )
    )
    session.flush()
    return key


def live_key_query(authorization: str | None) -> sa.Select[Any]:
    """The query of the tenant id owning the live bearer key of an `Authorization` header;
    a 401 for a header without one."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
    key = authorization[7:].strip()
    return sa.select(ApiKey.tenant_id).where(
        ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None)
    )


def authenticate(session: Session, authorization: str | None) -> str:
    """The id of the tenant owning the bearer key in an `Authorization` header, or a 401."""
    tenant_id = session.scalar(live_key_query(authorization))
    if tenant_id is None:
        raise AuthenticationError("invalid API key")
    return str(tenant_id)
