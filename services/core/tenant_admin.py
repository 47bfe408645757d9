"""What an operator does to tenants (`vlmq tenants`): list them, and set their weight in
fair queuing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core import audit
from services.core.tables import ApiKey, Tenant

# A weight is a share of the model: from a hundredth of a weight-1 tenant's to a hundredfold.
MIN_WEIGHT = 0.01
MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class TenantInfo:
    """What an operator sees of a tenant."""

    id: str
    name: str
    weight: float
    live_keys: int
    created_at: datetime


def list_tenants(session: Session) -> list[TenantInfo]:
    """Every tenant, oldest first, with its weight and how many live keys it has."""
    live_keys = (
        sa.select(sa.func.count())
        .select_from(ApiKey)
        .where(ApiKey.tenant_id == Tenant.id, ApiKey.revoked_at.is_(None))
        .scalar_subquery()
    )
    rows = session.execute(
        sa.select(Tenant.id, Tenant.name, Tenant.weight, Tenant.created_at, live_keys).order_by(
            Tenant.created_at, Tenant.id
        )
    ).all()
    return [TenantInfo(row[0], row[1], float(row[2]), int(row[4]), row[3]) for row in rows]


def set_weight(session: Session, tenant: str, weight: float) -> TenantInfo:
    """Set a tenant's weight (named by name or id); a ValueError for an unknown tenant or a
    weight out of range."""
    if not math.isfinite(weight) or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise ValueError(f"a weight is between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}")
    found = session.scalar(
        sa.select(Tenant).where(sa.or_(Tenant.name == tenant, Tenant.id == tenant))
    )
    if found is None:
        raise ValueError(f"no tenant named {tenant!r} (see `vlmq tenants list`)")
    audit.record(
        session,
        audit.Actor(audit.OPERATOR),
        "tenant.weight_set",
        tenant_id=found.id,
        details={"from": found.weight, "to": weight},
    )
    found.weight = weight
    session.flush()
    return next(info for info in list_tenants(session) if info.id == found.id)


def weights(session: Session) -> dict[str, float]:
    """The weights of the tenants whose weight is not 1, by tenant id."""
    rows = session.execute(sa.select(Tenant.id, Tenant.weight).where(Tenant.weight != 1)).all()
    return {row.id: float(row.weight) for row in rows}
