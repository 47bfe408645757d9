"""Inputs the fuzz tests found answering 5xx, kept so that every run sends them (a random
run may not draw them again): NUL, which PostgreSQL cannot store, and lone surrogates, which
UTF-8 cannot encode, in ids, text and URLs; numbers that `str.isdigit()` accepts but `int()`
refuses; image URLs that `urlsplit` cannot read. Each must be a 4xx in the one error shape
like any other bad input.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tests.fuzz import strategies as fz
from tests.fuzz.support import Tally, batch_input, check_answer, tally_fixture

HOOK = f"http://127.0.0.1:{fz.CLOSED_PORT}/hook"
CHAT = {"endpoint": "/v1/chat/completions"}
FILE = "{file}"  # stands for the fuzz tenant's batch input file


def job(**fields: Any) -> dict[str, Any]:
    """A valid `/v1/jobs` shorthand body with some fields changed."""
    return {**fz.VALID_JOB, **fields}


def asking(text: str, image_url: str = fz.PNG_URL) -> dict[str, Any]:
    """A messages body about `image_url` whose question is `text`."""
    content = [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": text},
    ]
    return {"messages": [{"role": "user", "content": content}]}


CASES: list[tuple[str, str, str, Any, dict[str, str]]] = [
    ("job-question-surrogate", "POST", "/v1/jobs", job(question="\ud800"), {}),
    ("job-message-surrogate", "POST", "/v1/jobs", asking("a\ud800"), {}),
    ("job-metadata-nul", "POST", "/v1/jobs", job(metadata={"\x00": "\x00"}), {}),
    ("job-metadata-surrogate", "POST", "/v1/jobs", job(metadata={"k": "\ud800"}), {}),
    ("job-webhook-nul", "POST", "/v1/jobs", job(webhook=HOOK + "\x00"), {}),
    ("job-webhook-surrogate", "POST", "/v1/jobs", job(webhook=HOOK + "\ud800"), {}),
    ("job-webhook-host-nul", "POST", "/v1/jobs", job(webhook="http://\x00/"), {}),
    ("job-webhook-host-surrogate", "POST", "/v1/jobs", job(webhook="http://\ud800/"), {}),
    (
        "job-idempotency-surrogate",
        "POST",
        "/v1/jobs",
        job(question="q\ud800"),
        {"Idempotency-Key": "found-surrogate"},
    ),
    ("image-url-port-too-big", "POST", "/v1/jobs", job(image="http://127.0.0.1:99999/x"), {}),
    ("image-url-port-not-a-number", "POST", "/v1/jobs", job(image="http://127.0.0.1:a/x"), {}),
    ("image-url-bad-ipv6", "POST", "/v1/jobs", asking("q", "https://[::1"), {}),
    ("chat-surrogate", "POST", "/v1/chat/completions", asking("\ud800"), {}),
    ("moderation-surrogate", "POST", "/v1/moderations", {"input": "\ud800"}, {}),
    (
        "moderation-category-nul",
        "POST",
        "/v1/moderations",
        {"input": "q", "categories": {"\x00": "\x00?"}},
        {},
    ),
    ("policy-nul", "PUT", "/v1/moderations/policy", {"categories": {"\x00": "a\x00"}}, {}),
    ("batch-file-nul", "POST", "/v1/batches", {"input_file_id": "\x00", **CHAT}, {}),
    ("batch-file-surrogate", "POST", "/v1/batches", {"input_file_id": "\ud800", **CHAT}, {}),
    (
        "batch-webhook-nul",
        "POST",
        "/v1/batches",
        {"input_file_id": FILE, **CHAT, "webhook": HOOK + "\x00"},
        {},
    ),
    (
        "batch-metadata-surrogate",
        "POST",
        "/v1/batches",
        {"input_file_id": FILE, **CHAT, "metadata": {"k": "\ud800"}},
        {},
    ),
    ("job-get-nul", "GET", "/v1/jobs/%00", None, {}),
    ("job-cancel-nul", "POST", "/v1/jobs/a%00b/cancel", None, {}),
    ("batch-get-nul", "GET", "/v1/batches/%00", None, {}),
    ("batch-cancel-nul", "POST", "/v1/batches/%00/cancel", None, {}),
    ("file-get-nul", "GET", "/v1/files/%00", None, {}),
    ("file-content-nul", "GET", "/v1/files/%00/content", None, {}),
    ("file-delete-nul", "DELETE", "/v1/files/%00", None, {}),
    ("jobs-after-nul", "GET", "/v1/jobs?after=%00", None, {}),
    ("batches-after-nul", "GET", "/v1/batches?after=%00", None, {}),
    ("jobs-limit-superscript", "GET", "/v1/jobs?limit=%C2%B2", None, {}),
    ("batches-limit-5000-digits", "GET", "/v1/batches?limit=" + "9" * 5000, None, {}),
    ("prefer-wait-5000-digits", "POST", "/v1/jobs", job(), {"Prefer": "wait=" + "9" * 5000}),
]
UPLOAD_NAMES = {"nul": "\x00", "nul-inside": "a\x00.jsonl", "256-chars": "a" * 256}


@pytest.fixture(scope="module")
def tally(backend: str) -> Iterator[Tally]:
    """The statuses of these cases, reported at the end of the module."""
    yield from tally_fixture("found_inputs", backend)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_input_is_a_client_error(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    known: dict[str, str],
    tally: Tally,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    if isinstance(body, dict) and body.get("input_file_id") == FILE:
        body = {**body, "input_file_id": known["file"]}
    options: dict[str, Any] = {"headers": {**fuzz_auth, **headers}}
    if body is not None:
        options.update(data=fz.to_json(body), content_type="application/json")
    response = fuzz_app.test_client().open(path, method=method, **options)
    synchronous = path in {"/v1/chat/completions", "/v1/moderations"}
    check_answer(tally, "found", response, (method, path, body), synchronous=synchronous)


@pytest.mark.parametrize("filename", UPLOAD_NAMES.values(), ids=UPLOAD_NAMES.keys())
def test_upload_name_is_no_server_error(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, filename: str
) -> None:
    form = {"purpose": "batch", "file": (io.BytesIO(batch_input()), filename)}
    response = fuzz_app.test_client().post("/v1/files", data=form, headers=fuzz_auth)
    check_answer(tally, "found", response, form)
