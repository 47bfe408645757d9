"""Every client mistake is a 4xx in the one error shape, decided before anything is stored."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from services.core.runtime import Runtime
from services.core.tables import Job
from tests.support import data_url, shape_png


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares `width` x `height` pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def bmp_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="BMP")
    return buffer.getvalue()


QUESTION = "what color is the shape?"


def solid_png(width: int, height: int) -> bytes:
    """A plain PNG of the given size."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, "PNG")
    return buffer.getvalue()


def image_message() -> dict[str, Any]:
    """A user message with one small image and a question."""
    return {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url(shape_png())}},
            {"type": "text", "text": QUESTION},
        ],
    }


CASES: list[tuple[str, Any, int, str | None]] = [
    ("invalid-json", b"{not json", 400, "invalid_request"),
    ("json-array", b"[1, 2]", 400, "invalid_request"),
    ("missing-question", {"image": data_url(shape_png())}, 400, "invalid_request"),
    ("empty-question", {"image": data_url(shape_png()), "question": "  "}, 400, "invalid_request"),
    ("missing-image", {"question": QUESTION}, 400, "invalid_request"),
    (
        "bad-base64",
        {"image": "data:image/png;base64,@@@not-base64@@@", "question": QUESTION},
        400,
        "invalid_request",
    ),
    ("not-a-data-url", {"image": "hello", "question": QUESTION}, 400, "invalid_request"),
    ("ftp-url", {"image": "ftp://example.com/a.png", "question": QUESTION}, 400, "invalid_request"),
    (
        "non-image-bytes",
        {"image": data_url(b"this is plain text, not an image"), "question": QUESTION},
        422,
        "invalid_image",
    ),
    (
        "truncated-png",
        {"image": data_url(shape_png()[:60]), "question": QUESTION},
        422,
        "invalid_image",
    ),
    (
        "bmp-format",
        {"image": data_url(bmp_image(), "image/bmp"), "question": QUESTION},
        415,
        "unsupported_image_format",
    ),
    (
        "decompression-bomb",
        {"image": data_url(png_bomb()), "question": QUESTION},
        413,
        "payload_too_large",
    ),
    (
        "unknown-field",
        {"image": data_url(shape_png()), "question": QUESTION, "bogus": 1},
        400,
        "invalid_request",
    ),
    (
        "max-tokens-too-big",
        {"image": data_url(shape_png()), "question": QUESTION, "max_tokens": 10**6},
        400,
        "invalid_request",
    ),
    (
        "messages-without-text",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": data_url(shape_png())}}],
                }
            ]
        },
        400,
        "invalid_request",
    ),
    (
        "messages-bad-role",
        {"messages": [{"role": "robot", "content": "hi"}]},
        400,
        "invalid_request",
    ),
    (
        "extreme-aspect-ratio",
        {"image": data_url(solid_png(2, 600)), "question": QUESTION},
        400,
        "image_aspect_ratio_too_large",
    ),
    (
        "prompt-past-the-context",
        {"image": data_url(shape_png()), "question": "red " * 1900, "max_tokens": 2500},
        400,
        "context_length_exceeded",
    ),
    (
        "seed-past-64-bits",
        {"image": data_url(shape_png()), "question": QUESTION, "seed": 2**64},
        400,
        "invalid_request",
    ),
    (
        "too-many-messages",
        {"messages": [image_message()] + [{"role": "user", "content": "hi"}] * 64},
        400,
        "invalid_request",
    ),
    (
        "too-many-parts",
        {"messages": [{"role": "user", "content": image_message()["content"] * 65}]},
        400,
        "invalid_request",
    ),
    ("deeply-nested-json", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_request"),
    ("deeply-nested-object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "invalid_request"),
    (
        "loopback-image-url",
        {"image": "http://127.0.0.2/latest/meta-data", "question": QUESTION},
        400,
        "outbound_address_refused",
    ),
]


def job_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Job)) or 0)


@pytest.mark.parametrize(
    ("body", "status", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_4xx_and_stores_nothing(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime, body: Any, status: int, code: str
) -> None:
    before = job_count(runtime)
    if isinstance(body, bytes):
        response = client.post(
            "/v1/jobs", data=body, headers={**auth, "Content-Type": "application/json"}
        )
    else:
        response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert set(error) == {"type", "code", "message", "param"}
    assert error["code"] == code and error["message"]
    assert job_count(runtime) == before


def test_oversized_body_is_413(client: FlaskClient, auth: dict[str, str], settings: Any) -> None:
    big = base64.b64encode(b"\0" * (settings.max_body_bytes + 1)).decode()
    response = client.post(
        "/v1/jobs",
        json={"image": f"data:image/png;base64,{big}", "question": QUESTION},
        headers=auth,
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_oversized_image_is_413(client: FlaskClient, auth: dict[str, str], settings: Any) -> None:
    big = base64.b64encode(b"\0" * (settings.max_image_bytes + 10)).decode()
    response = client.post(
        "/v1/jobs",
        json={"image": f"data:image/png;base64,{big}", "question": QUESTION},
        headers=auth,
    )
    assert response.status_code == 413


def test_multipart_without_image_or_with_bomb(client: FlaskClient, auth: dict[str, str]) -> None:
    no_image = client.post(
        "/v1/jobs", data={"question": QUESTION}, headers=auth, content_type="multipart/form-data"
    )
    assert no_image.status_code == 400
    bomb = client.post(
        "/v1/jobs",
        data={"image": (io.BytesIO(png_bomb()), "bomb.png"), "question": QUESTION},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert bomb.status_code == 413
    bad_number = client.post(
        "/v1/jobs",
        data={
            "image": (io.BytesIO(shape_png()), "a.png"),
            "question": QUESTION,
            "max_tokens": "many",
        },
        headers=auth,
        content_type="multipart/form-data",
    )
    assert bad_number.status_code == 400


def test_unknown_route_and_method_use_the_error_shape(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    missing = client.get("/v1/nothing-here", headers=auth)
    assert missing.status_code == 404 and "error" in missing.get_json()
    wrong = client.delete("/v1/jobs", headers=auth)
    assert wrong.status_code == 405 and "error" in wrong.get_json()


def test_chat_rejects_bad_requests_before_enqueueing(
    client: FlaskClient, auth: dict[str, str], runtime: Runtime
) -> None:
    before = job_count(runtime)
    for body in (
        {"messages": "hi"},
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}
            ]
        },
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(shape_png())}},
                        {"type": "text", "text": "q"},
                    ],
                }
            ],
            "n": 99,
        },
    ):
        response = client.post("/v1/chat/completions", json=body, headers=auth)
        assert 400 <= response.status_code < 500, body
        assert "error" in response.get_json()
    assert job_count(runtime) == before
