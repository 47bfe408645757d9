"""Files and batches at their limits: long and odd file names, the batch line cap at create."""

from __future__ import annotations

import io
from urllib.parse import unquote

from flask.testing import FlaskClient

from services.api import create_app
from services.core.config import Settings
from tests.support import chat_batch_input, upload_batch_input


def upload(client: FlaskClient, auth: dict[str, str], name: str) -> tuple[int, dict]:
    response = client.post(
        "/v1/files",
        data={"purpose": "batch", "file": (io.BytesIO(chat_batch_input(1)), name)},
        headers=auth,
        content_type="multipart/form-data",
    )
    return response.status_code, response.get_json()


def test_a_file_name_over_255_characters_is_a_400(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    status, body = upload(client, auth, "x" * 300 + ".jsonl")
    assert status == 400
    assert body["error"]["param"] == "file" and "255" in body["error"]["message"]
    assert upload(client, auth, "x" * 249 + ".jsonl")[0] == 200


def test_odd_file_names_download_with_a_safe_header(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    name = 'фото "quoted"\r\nX-Injected: 1.jsonl'
    status, body = upload(client, auth, name)
    assert status == 200
    assert "\r" not in body["filename"] and "\n" not in body["filename"]
    content = client.get(f"/v1/files/{body['id']}/content", headers=auth)
    assert content.status_code == 200
    assert "X-Injected" not in content.headers
    disposition = content.headers["Content-Disposition"]
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == body["filename"]


def test_a_batch_over_the_line_cap_is_refused_at_create(
    settings: Settings, auth: dict[str, str]
) -> None:
    app = create_app(settings.with_overrides(max_batch_lines=3))
    try:
        client = app.test_client()
        file_id = upload_batch_input(client, auth, chat_batch_input(4))
        response = client.post(
            "/v1/batches",
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            headers=auth,
        )
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["param"] == "input_file_id" and "more than the 3" in error["message"]
    finally:
        app.extensions["vlmq"].close()
