"""One request that fails a batched model call fails alone; every other request answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.api import create_app
from services.core import metrics
from services.core.config import Settings
from services.core.runtime import Runtime
from services.core.tables import Tenant
from tests.fake_stack import FakeStack, job, submit, terminal
from tests.support import wait_until


@pytest.mark.fake_backend("PoisonFakeBackend")
def test_a_poison_request_fails_alone_with_words_a_client_can_act_on(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.5")
    # A first job holds the model while the others queue up, so they share one call.
    blocker = submit(fake_stack, auth, "first")
    wait_until(lambda: fake_stack.calls("call") == 1, 30, "the first job's model call")
    questions = [f"question {n}" for n in range(11)] + ["poison"]
    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(lambda q: submit(fake_stack, auth, q), questions))
    jobs = [terminal(fake_stack, auth, job_id) for job_id in ids]
    assert terminal(fake_stack, auth, blocker)["status"] == "succeeded"

    *healthy, poison = jobs
    assert [j["status"] for j in healthy] == ["succeeded"] * 11
    assert [j["output"] for j in healthy] == [f"echo: {q}" for q in questions[:11]]
    assert poison["status"] == "failed"
    error = poison["error"]
    assert error["type"] == "inference_error"
    assert "aspect ratio" in error["message"] and "ValueError" not in error["message"]
    # At least one shared call failed and was retried member by member.
    sizes = [int(line.split("size=")[1].split()[0]) for line in call_lines(fake_stack)]
    assert any(size > 1 for size in sizes) and sizes.count(1) >= 2
    assert job(fake_stack, auth, poison["id"])["attempts"] == 1


def call_lines(stack: FakeStack) -> list[str]:
    """The backend's calls, one line each (`call size=N pid`)."""
    return [line for line in stack.call_log.read_text().splitlines() if line.startswith("call")]


def test_metrics_are_the_operators_alone_and_name_no_tenant(
    settings: Settings, client: FlaskClient, runtime: Runtime
) -> None:
    # An answered job of a tenant, so that its per-tenant series exist.
    with runtime.sessions() as session:
        tenant_id = session.scalar(sa.select(Tenant.id).where(Tenant.name == "acme"))
    assert tenant_id is not None
    usage = {"prompt_tokens": 3, "completion_tokens": 1}
    metrics.job_answered(settings.model_id, tenant_id, {"usage": usage}, 1.0)
    # From this host, with no operator token set: a Prometheus beside `vlmq up`.
    here = client.get("/metrics")
    assert here.status_code == 200
    assert tenant_id.encode() not in here.data
    assert f'tenant="{metrics.tenant_label(tenant_id, False)}"'.encode() in here.data
    # From elsewhere: nothing there. (A WSGI environ value; nothing is sent anywhere.)
    elsewhere = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert elsewhere.status_code == 404
    assert elsewhere.get_json()["error"]["code"] == "not_found"
    # With an operator token, only a scrape that carries it, from anywhere.
    guarded = create_app(settings.with_overrides(operator_token="scrape-token")).test_client()
    assert guarded.get("/metrics").status_code == 404
    assert guarded.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 404
    token = {"Authorization": "Bearer scrape-token"}
    assert (
        guarded.get(
            "/metrics", headers=token, environ_base={"REMOTE_ADDR": "203.0.113.9"}
        ).status_code
        == 200
    )


def test_the_public_port_shows_no_paths_and_the_playground_is_locked_down(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    models = client.get("/v1/models", headers=auth).get_json()["data"]
    assert all("/" not in (model.get("root") or "") for model in models)
    page = client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/v1/jobs", headers=auth).headers["X-Content-Type-Options"] == "nosniff"
