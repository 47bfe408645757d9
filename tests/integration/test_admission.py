"""Admission by cost, on a real Redis and database (no worker: the queue only fills):
the token quota, the refusal of work that would wait too long, and queue deadlines checked
at the claim."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.api import create_app
from services.core.bands import Band
from services.core.fair_queue import Settlement
from services.core.jobs.lifecycle import claim_jobs
from services.core.migrate import upgrade
from services.core.runtime import Runtime
from tests.support import data_url, make_settings, shape_png
from vlmq.cli import create_key

IMAGE = data_url(shape_png("olive"))


@pytest.fixture()
def stack(
    tmp_path: Path, database_url: str, redis_url: str, tiny_model_dir: Path
) -> tuple[FlaskClient, Runtime, dict[str, dict[str, str]]]:
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url,
        tiny_model_dir,
        served_model_name=f"admission-{secrets.token_hex(3)}",
        max_queue_wait_s=5,
        tenant_max_queued_tokens=12_500,
    )
    upgrade(settings.sqlalchemy_url)
    app = create_app(settings)
    keys = {
        name: {
            "Authorization": f"Bearer {create_key(settings, f'{name}-{secrets.token_hex(3)}', 't')}"
        }
        for name in ("heavy", "light")
    }
    return app.test_client(), app.extensions["vlmq"], keys


def ask(client: FlaskClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/v1/jobs",
        json={"image": IMAGE, "question": "what color?", "temperature": 1.0, **body},
        headers=auth,
    )


def test_work_that_would_wait_too_long_is_refused_by_band_and_share(
    stack: tuple[FlaskClient, Runtime, dict[str, dict[str, str]]],
) -> None:
    client, runtime, keys = stack
    for _ in range(30):
        assert ask(client, keys["heavy"], max_tokens=256).status_code == 202
    # The model served 300 tokens a second ago: about 10 tokens/s over the window.
    runtime.broker.fair.settle([Settlement(int(Band.DEFAULT), "someone", 0, 300)])
    time.sleep(1.1)
    flex = ask(client, keys["light"], service_tier="flex")
    assert flex.status_code == 429, flex.get_json()
    assert flex.get_json()["error"]["code"] == "queue_wait_exceeded"
    assert int(flex.headers["Retry-After"]) >= 1
    # A tenant under its share is admitted; the one holding the queue is not, unless it pays
    # for priority.
    assert ask(client, keys["light"]).status_code == 202
    time.sleep(1.1)  # each API process reads the queue's load at most once a second
    over = ask(client, keys["heavy"])
    assert over.status_code == 429 and over.get_json()["error"]["code"] == "queue_wait_exceeded"
    assert ask(client, keys["heavy"], service_tier="priority").status_code == 202


def test_the_token_quota_counts_prompt_and_max_tokens(
    stack: tuple[FlaskClient, Runtime, dict[str, dict[str, str]]],
) -> None:
    client, _, keys = stack
    first = ask(client, keys["light"], max_tokens=3000)
    assert first.status_code == 202
    for _ in range(3):
        ask(client, keys["light"], max_tokens=3000)
    refused = ask(client, keys["light"], max_tokens=3000)
    assert refused.status_code == 429, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded" and "VLMQ_TENANT_MAX_QUEUED_TOKENS" in error["message"]
    # Small work still fits.
    assert ask(client, keys["light"], max_tokens=2).status_code == 202


def test_a_job_past_its_queue_deadline_expires_at_the_claim(
    stack: tuple[FlaskClient, Runtime, dict[str, dict[str, str]]],
) -> None:
    client, runtime, keys = stack
    job = ask(client, keys["light"], max_queue_ms=1, priority=5).get_json()
    assert job["service_tier"] == "flex" and job["queue_position"] is None
    time.sleep(0.05)
    with runtime.unit_of_work() as session:
        assert claim_jobs(session, runtime.settings, [job["id"]]) == []
    ended = client.get(f"/v1/jobs/{job['id']}", headers=keys["light"]).get_json()
    assert ended["status"] == "expired" and ended["attempts"] == 0
    assert ended["error"]["type"] == "expired"
