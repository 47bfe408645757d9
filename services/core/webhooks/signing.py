"""Standard Webhooks signing: the tenant's `whsec_` secret and the headers of one attempt."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from services.core.db import session_scope
from services.core.errors import NotFoundError
from services.core.tables import Tenant


def new_secret() -> str:
    """A new Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def tenant_secret(sessions: sessionmaker[Session], tenant_id: str) -> str:
    """The tenant's signing secret, created on first use."""
    with sessions() as session:
        secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    if secret:
        return secret
    with session_scope(sessions) as session:
        # Conditional, so two first uses at once agree on one secret.
        session.execute(
            sa.update(Tenant)
            .where(Tenant.id == tenant_id, Tenant.webhook_secret.is_(None))
            .values(webhook_secret=new_secret())
        )
        secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
    if not secret:
        raise NotFoundError(f"no tenant {tenant_id!r}")
    return secret


def signed_headers(secret: str, msg_id: str, body: str, timestamp: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    return {
        "content-type": "application/json",
        "user-agent": "vlmq-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, body),
    }


def payload_body(payload: dict[str, Any]) -> str:
    """The JSON body that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"))
