"""The image corpus (see `tests.fuzz.corpus`) sent every way a client can send an image: as a
data URL, as a multipart upload, and inside an OpenAI message. Each image gets its one
expected answer whichever way it comes, and none ever gets a 5xx.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from tests.fuzz.corpus import CorpusImage, build_corpus
from tests.fuzz.support import Tally, check_answer, tally_fixture

CORPUS = build_corpus()
QUESTION = "what color is the shape?"
DELIVERIES = ["data-url", "upload", "message"]


@pytest.fixture(scope="module")
def tally(backend: str) -> Iterator[Tally]:
    """The statuses of the corpus, reported at the end of the module."""
    yield from tally_fixture(
        "image_corpus", backend, images=len(CORPUS), deliveries=len(DELIVERIES)
    )


def submit(app: Flask, auth: dict[str, str], image: CorpusImage, delivery: str) -> TestResponse:
    """POST `image` to `/v1/jobs` the way `delivery` names."""
    client = app.test_client()
    if delivery == "upload":
        form = {
            "image": (io.BytesIO(image.data), f"{image.name}.img", image.mime),
            "question": QUESTION,
        }
        return client.post("/v1/jobs", data=form, headers=auth)
    url = f"data:{image.mime};base64,{base64.b64encode(image.data).decode()}"
    body: dict[str, Any] = {"image": url, "question": QUESTION}
    if delivery == "message":
        content = [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": QUESTION},
        ]
        body = {"messages": [{"role": "user", "content": content}]}
    return client.post("/v1/jobs", json=body, headers=auth)


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("image", CORPUS, ids=[image.name for image in CORPUS])
def test_each_image_gets_its_answer(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    tally: Tally,
    image: CorpusImage,
    delivery: str,
) -> None:
    response = submit(fuzz_app, fuzz_auth, image, delivery)
    body = response.get_json(silent=True) or {}
    check_answer(tally, delivery, response, (image.name, delivery))
    # A refusal's code; a job object has an `error` field too, which is null.
    answer = (response.status_code, (body.get("error") or {}).get("code"))
    if answer != (image.status, image.code or answer[1]):
        tally.unexpected.append(f"{image.name} as {delivery}: {answer[0]} {answer[1]}")
    assert response.status_code == image.status, body
    if image.code is not None:
        assert answer[1] == image.code, body
