"""Storage quotas per tenant: bytes kept (files, jobs' images) and open batches, checked
before anything is stored; `GET /v1/usage` shows a tenant its own counts."""

from __future__ import annotations

import io
import secrets

import sqlalchemy as sa
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.test import TestResponse

from services.api import create_app
from services.core.auth import authenticate
from services.core.config import Settings
from services.core.runtime import Runtime
from services.core.tables import File
from tests.support import chat_batch_input, data_url, shape_png
from vlmq.cli import create_key


def auth_of(settings: Settings) -> dict[str, str]:
    key = create_key(settings, f"store-{secrets.token_hex(4)}", "tests")
    return {"Authorization": f"Bearer {key}"}


def upload(client: FlaskClient, auth: dict[str, str], raw: bytes) -> TestResponse:
    return client.post(
        "/v1/files",
        data={"purpose": "batch", "file": (io.BytesIO(raw), "in.jsonl")},
        headers=auth,
        content_type="multipart/form-data",
    )


def files_of(runtime: Runtime, auth: dict[str, str]) -> int:
    """How many files the tenant of `auth` has."""
    with runtime.sessions() as session:
        tenant = authenticate(session, auth["Authorization"], runtime.settings).tenant_id
        return int(
            session.scalar(
                sa.select(sa.func.count()).select_from(File).where(File.tenant_id == tenant)
            )
            or 0
        )


def test_a_tenant_over_its_stored_bytes_is_refused_before_anything_is_stored(
    settings: Settings, runtime: Runtime
) -> None:
    image = data_url(shape_png("red"))
    image_bytes = len(shape_png("red"))
    app = create_app(settings.with_overrides(tenant_max_stored_bytes=4000 + image_bytes))
    client = app.test_client()
    auth, other = auth_of(settings), auth_of(settings)
    try:
        assert upload(client, auth, b"x" * 3000).status_code == 200
        job = {"image": image, "question": "what color?", "temperature": 1.0}
        assert client.post("/v1/jobs", json=job, headers=auth).status_code == 202
        usage = client.get("/v1/usage", headers=auth).get_json()
        assert usage["object"] == "usage" and usage["stored_bytes"] == 3000 + image_bytes
        assert usage["unfinished_jobs"] == 1 and usage["open_batches"] == 0
        assert usage["limits"]["max_stored_bytes"] == 4000 + image_bytes
        # 1,500 more bytes would take it over: refused, nothing stored.
        refused = upload(client, auth, b"y" * 1500)
        assert refused.status_code == 429
        error = refused.get_json()["error"]
        assert error["code"] == "storage_quota_exceeded" and error["type"] == "insufficient_quota"
        assert "VLMQ_TENANT_MAX_STORED_BYTES" in error["message"]
        assert files_of(runtime, auth) == 1
        noise = Image.frombytes("RGB", (48, 48), secrets.token_bytes(48 * 48 * 3))
        buffer = io.BytesIO()
        noise.save(buffer, "PNG")  # about 7 kB: over what is left
        big = {**job, "image": data_url(buffer.getvalue())}
        assert client.post("/v1/jobs", json=big, headers=auth).status_code == 429
        # Another tenant keeps its own quota.
        assert upload(client, other, b"z" * 3000).status_code == 200
        assert client.get("/v1/usage", headers=other).get_json()["stored_bytes"] == 3000
    finally:
        app.extensions["vlmq"].close()


def test_a_tenant_over_its_open_batches_is_refused(settings: Settings) -> None:
    app = create_app(settings.with_overrides(tenant_max_open_batches=1))
    client = app.test_client()
    auth = auth_of(settings)
    try:
        file_id = upload(client, auth, chat_batch_input(1)).get_json()["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        assert client.post("/v1/batches", json=body, headers=auth).status_code == 200
        refused = client.post("/v1/batches", json=body, headers=auth)
        assert refused.status_code == 429
        assert refused.get_json()["error"]["code"] == "batch_quota_exceeded"
        assert client.get("/v1/usage", headers=auth).get_json()["open_batches"] == 1
    finally:
        app.extensions["vlmq"].close()
