"""The fuzz tests' own app: the backend's stack under its own model name and tenants.

The fuzz cases enqueue hundreds of valid jobs that must not reach the suite's real worker
(it would spend minutes answering them, and slow every test behind them), nor count
against the tenants other tests use. A model name of its own gives the fuzz app a queue
no worker listens to (and jobs the suite's maintenance pass leaves alone); its tenants are
its own too.
"""

from __future__ import annotations

import io

import pytest
from flask import Flask

from services.api import create_app
from services.core.config import Settings
from tests.fuzz.strategies import MODEL, VALID_JOB
from tests.fuzz.support import batch_input
from vlmq.cli import create_key


@pytest.fixture(scope="session")
def fuzz_settings(settings: Settings) -> Settings:
    """The backend's settings, with a model (hence a queue) no worker serves and short waits
    (`Prefer: wait=N` and synchronous calls would otherwise hold a case for minutes)."""
    return settings.with_overrides(
        served_model_name=MODEL, sync_timeout_s=0.01, max_prefer_wait_s=0.01
    )


@pytest.fixture(scope="session")
def fuzz_app(fuzz_settings: Settings) -> Flask:
    """The API app the fuzz cases talk to."""
    return create_app(fuzz_settings)


@pytest.fixture(scope="session")
def fuzz_auth(fuzz_settings: Settings) -> dict[str, str]:
    """Authorization header of the tenant `fuzz`."""
    return {"Authorization": f"Bearer {create_key(fuzz_settings, 'fuzz', 'fuzz tests')}"}


@pytest.fixture(scope="session")
def fuzz_other_auth(fuzz_settings: Settings) -> dict[str, str]:
    """Authorization header of another tenant, whose ids the fuzz tenant must never see."""
    return {"Authorization": f"Bearer {create_key(fuzz_settings, 'fuzz-other', 'fuzz tests')}"}


@pytest.fixture(scope="session")
def known(
    fuzz_app: Flask, fuzz_auth: dict[str, str], fuzz_other_auth: dict[str, str]
) -> dict[str, str]:
    """Ids of real objects: a job, a file and a batch of the fuzz tenant, and a job and a
    file of another tenant (which the fuzz tenant must see as unknown)."""
    client = fuzz_app.test_client()
    found: dict[str, str] = {}
    for owner, auth in (("", fuzz_auth), ("other_", fuzz_other_auth)):
        response = client.post("/v1/jobs", json=VALID_JOB, headers=auth)
        assert response.status_code == 202, response.get_json()
        found[owner + "job"] = response.get_json()["id"]
        upload = {"purpose": "batch", "file": (io.BytesIO(batch_input()), "in.jsonl")}
        response = client.post("/v1/files", data=upload, headers=auth)
        assert response.status_code == 200, response.get_json()
        found[owner + "file"] = response.get_json()["id"]
    batch = {"input_file_id": found["file"], "endpoint": "/v1/chat/completions"}
    response = client.post("/v1/batches", json=batch, headers=fuzz_auth)
    assert response.status_code == 200, response.get_json()
    found["batch"] = response.get_json()["id"]
    return found
