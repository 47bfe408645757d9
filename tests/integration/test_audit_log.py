"""The audit log on real parts (the suite's database and Redis, the live API, the `vlmq`
command in a process of its own): administrative changes are recorded with who, what,
when and from where, a tenant reads only its own events, page by page, the operator reads
them all, unusual behaviour is noticed once a minute, and nothing secret is written."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import requests
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api import create_app
from services.core import audit
from services.core.auth import hash_key
from services.core.config import Settings
from services.core.runtime import Runtime
from services.core.tables import ApiKey, AuditEvent
from tests.support import cli
from vlmq.cli import create_key


def events(url: str, key: str, **query: Any) -> dict[str, Any]:
    """A page of the key's tenant's audit events."""
    answer = requests.get(
        f"{url}/v1/audit_events",
        params=query,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def test_changes_through_the_api_are_the_tenants_own_events(
    live_server: str, settings: Settings, other_api_key: str, runtime: Runtime
) -> None:
    key = create_key(settings, f"audited-{secrets.token_hex(4)}", "audit test")
    auth = {"Authorization": f"Bearer {key}"}
    for method, path, body in [
        ("PUT", "/v1/moderations/policy", {"categories": {"red": "is it red?"}, "screen": True}),
        ("PUT", "/v1/presets/shop", {"system_prompt": "You answer shop customers."}),
        ("DELETE", "/v1/presets/shop", None),
        (
            "POST",
            "/v1/webhook_endpoints",
            {"url": "http://127.0.0.1:9/hook", "enabled_events": ["response.completed"]},
        ),
        ("POST", "/v1/webhooks/default/secret/rotate", None),
    ]:
        answer = requests.request(method, live_server + path, json=body, headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        secret_shown = answer.json().get("secret") or answer.json().get("key")
    newest = events(live_server, key, limit=3)
    older = events(live_server, key, limit=3, after=newest["last_id"])
    page = newest["data"] + older["data"]
    assert newest["has_more"] and not older["has_more"]
    assert [event["action"] for event in page] == [
        "webhook_secret.rotated",
        "webhook_endpoint.created",
        "preset.deleted",
        "preset.updated",
        "moderation_policy.updated",
        "api_key.created",
    ]
    changes = page[:-1]
    assert {event["address"] for event in changes} == {"127.0.0.1"}
    actor = changes[0]["actor"]
    assert actor.startswith("key_") and {event["actor"] for event in changes} == {actor}
    assert page[-1]["actor"] == audit.OPERATOR
    assert changes[-1]["details"] == {"categories": ["red"], "screen": True}
    # Nothing secret: neither the key nor the secrets the calls showed.
    written = json.dumps(page)
    assert key not in written and key[:12] not in written
    assert secret_shown and secret_shown not in written
    # Another tenant sees none of it, and cannot page after it.
    assert not any(
        e["id"] in {x["id"] for x in page} for e in events(live_server, other_api_key)["data"]
    )
    refused = requests.get(
        f"{live_server}/v1/audit_events",
        params={"after": page[0]["id"]},
        headers={"Authorization": f"Bearer {other_api_key}"},
        timeout=30,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "after"


def test_the_operators_changes_are_listed_by_vlmq_audit_list(settings: Settings) -> None:
    tenant = f"operated-{secrets.token_hex(4)}"
    key = (
        cli(settings, "keys", "create", "--tenant", tenant, "--label", "ops")
        .strip()
        .splitlines()[-1]
    )
    listed_keys = cli(settings, "keys", "list", "--tenant", tenant)
    (key_id,) = re.findall(r"key_[0-9a-f]{24}", listed_keys)
    cli(settings, "keys", "revoke", key_id)
    cli(settings, "tenants", "set", "--weight", "2", tenant)
    listed = cli(settings, "audit", "list", "--tenant", tenant, "--limit", "10")
    lines = [line for line in listed.splitlines() if tenant in line]
    assert [
        next(a for a in ("weight_set", "revoked", "created") if a in line) for line in lines
    ] == [
        "weight_set",
        "revoked",
        "created",
    ]
    assert all("operator" in line for line in lines) and key_id in listed
    assert key not in listed
    # Without --tenant the operator sees every tenant's events.
    assert tenant in cli(settings, "audit", "list", "--limit", "100")


def test_unusual_behaviour_is_recorded_once_a_minute(
    settings: Settings, runtime: Runtime, api_key: str
) -> None:
    strict = settings.with_overrides(unauthenticated_rate_limit="2/minute")
    client: FlaskClient = create_app(strict).test_client()
    address = f"127.0.0.{secrets.randbelow(200) + 20}"
    runtime.redis.delete(f"{audit.SIGNAL_PREFIX}auth.failures_exceeded:{address}")
    statuses = [
        client.get(
            "/v1/jobs",
            headers={"Authorization": "Bearer wrong"},
            environ_base={"REMOTE_ADDR": address},
        ).status_code
        for _ in range(6)
    ]
    assert statuses[:2] == [401, 401] and set(statuses[2:]) == {429}
    with runtime.sessions() as session:
        noticed = session.query(AuditEvent).filter_by(target=address).all()
    assert [(e.action, e.tenant_id, e.actor) for e in noticed] == [
        ("auth.failures_exceeded", None, audit.SERVICE)
    ]


def test_a_tenant_refused_by_its_limits_is_noticed_once_a_minute(
    settings: Settings, runtime: Runtime
) -> None:
    key = create_key(settings, f"limited-{secrets.token_hex(4)}", "limits")
    client: FlaskClient = create_app(settings.with_overrides(rate_limit="2/minute")).test_client()
    statuses = [
        client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code
        for _ in range(5)
    ]
    assert statuses[:2] == [200, 200] and set(statuses[2:]) == {429}
    with runtime.sessions() as session:
        tenant_id = session.scalar(
            sa.select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key))
        )
        noticed = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        ).all()
    assert [(e.action, e.actor, e.details) for e in noticed if e.action != "api_key.created"] == [
        ("limits.refused", audit.SERVICE, {"code": "rate_limit_exceeded"})
    ]


def test_audit_events_are_kept_as_long_as_jobs(settings: Settings, runtime: Runtime) -> None:
    from datetime import timedelta

    from services.core import retention
    from services.core.db import utcnow

    old, new = (f"retention-{secrets.token_hex(4)}" for _ in range(2))
    with runtime.unit_of_work() as session:
        for target in (old, new):
            audit.record(
                session, audit.Actor(audit.OPERATOR), "test.kept", tenant_id=None, target=target
            )
    with runtime.unit_of_work() as session:
        session.execute(
            sa.update(AuditEvent)
            .where(AuditEvent.target == old)
            .values(created_at=utcnow() - timedelta(seconds=settings.job_retention_s + 60))
        )
    retention.prune_audit_events(runtime)
    with runtime.sessions() as session:
        left = set(
            session.scalars(sa.select(AuditEvent.target).where(AuditEvent.action == "test.kept"))
        )
    assert new in left and old not in left
