"""Standard Webhooks signing: the tenant's `whsec_` secret (stored sealed, see
services.core.secret_box; rotated with an overlap) and the headers of one attempt."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from standardwebhooks import Webhook

from services.core.db import session_scope, utcnow
from services.core.errors import NotFoundError
from services.core.runtime import Runtime
from services.core.secret_box import secret_box
from services.core.tables import Tenant, WebhookEndpoint


def new_secret() -> str:
    """A new Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def tenant_secret(runtime: Runtime, tenant_id: str) -> str:
    """The tenant's signing secret, created on first use (stored sealed)."""
    return signing_secrets(runtime, tenant_id)[0]


def signing_secrets(runtime: Runtime, tenant_id: str) -> list[str]:
    """The secrets that sign the tenant's webhooks now: its secret (created on first use),
    then, during a rotation's overlap, the one it replaced."""
    box = secret_box(runtime.settings)
    with runtime.sessions() as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFoundError(f"no tenant {tenant_id!r}")
        current = tenant.webhook_secret
        previous, until = tenant.previous_webhook_secret, tenant.previous_webhook_secret_until
    if not current:
        with session_scope(runtime.sessions) as session:
            # Conditional, so two first uses at once agree on one secret.
            session.execute(
                sa.update(Tenant)
                .where(Tenant.id == tenant_id, Tenant.webhook_secret.is_(None))
                .values(webhook_secret=box.seal(new_secret()))
            )
            current = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == tenant_id))
        assert current is not None  # noqa: S101 (set just above, or by the other first use)
    secrets_now = [box.open(current)]
    if previous and until is not None and until > utcnow():
        secrets_now.append(box.open(previous))
    return secrets_now


def endpoint_secret(runtime: Runtime, endpoint_id: str) -> str | None:
    """The endpoint's signing secret; None once the endpoint is deleted."""
    with runtime.sessions() as session:
        sealed = session.scalar(
            sa.select(WebhookEndpoint.secret).where(WebhookEndpoint.id == endpoint_id)
        )
    return secret_box(runtime.settings).open(sealed) if sealed else None


def rotate_secret(runtime: Runtime, tenant_id: str) -> str:
    """Give the tenant a new signing secret; the old one keeps signing beside it for
    `webhook_secret_overlap_s`. Returns the new secret."""
    old = tenant_secret(runtime, tenant_id)
    box = secret_box(runtime.settings)
    fresh = new_secret()
    until = utcnow() + timedelta(seconds=runtime.settings.webhook_secret_overlap_s)
    with session_scope(runtime.sessions) as session:
        session.execute(
            sa.update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(
                webhook_secret=box.seal(fresh),
                previous_webhook_secret=box.seal(old),
                previous_webhook_secret_until=until,
            )
        )
    return fresh


def signed_headers(
    signing: list[str], msg_id: str, body: str, timestamp: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's),
    signed by each secret in `signing` (space-separated signatures, as the standard allows
    while a secret is rotated)."""
    return {
        "content-type": "application/json",
        "user-agent": "vlmq-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(
            Webhook(secret).sign(msg_id, timestamp, body) for secret in signing
        ),
    }


def payload_body(payload: dict[str, Any]) -> str:
    """The JSON body that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"))
