"""Property: no request body, query, header or path makes any endpoint answer 5xx, and every
4xx is in the one error shape `{"error": {"type", "code", "message", "param"}}`.

Each test draws requests for one endpoint (see `tests.fuzz.strategies`) and sends them through
the Flask test client to the backend's real database and Redis. The statuses are tallied
and reported at the end of the run (`request_fuzz: ...` in the figures).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import hypothesis
import pytest
from flask import Flask
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from tests.fuzz.support import Tally, batch_input, check_answer, tally_fixture

FUZZ = hypothesis.settings(
    # CI replays the same cases on every run, so a run fails only for a change in vlmq;
    # `VLMQ_FUZZ_RANDOM=1` explores new ones (a failure prints the example to pin).
    derandomize=os.environ.get("VLMQ_FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,  # nothing written to the checkout; a failure prints its own example
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


def fuzz(max_examples: int) -> hypothesis.settings:
    """The fuzz settings with `max_examples` cases, sized so each backend's run stays short."""
    return hypothesis.settings(FUZZ, max_examples=max_examples)


JOB_BASES: list[dict[str, Any]] = [fz.VALID_JOB, {"messages": fz.VALID_MESSAGES}]
JOB_FIELDS = {
    **fz.generation_fields,
    "image": fz.image_refs,
    "question": fz.questions,
    "messages": fz.messages,
    "metadata": fz.metadata,
    "webhook": fz.webhooks,
    "webhook_events_filter": fz.event_filters,
}
CHAT_FIELDS = {
    **fz.generation_fields,
    "messages": fz.messages,
    "n": st.one_of(st.sampled_from([1, 2, 0, -1]), fz.integers),
    "stream": st.booleans(),
    "stream_options": st.one_of(
        st.fixed_dictionaries({"include_usage": fz.json_values}), fz.json_values
    ),
    "logprobs": st.booleans(),
    "tools": fz.json_values,
    "response_format": fz.json_values,
    "user": fz.strings,
    "webhook": fz.webhooks,
}
response_parts = st.one_of(
    st.builds(lambda url: {"type": "input_image", "image_url": url}, fz.image_refs),
    st.builds(lambda ident: {"type": "input_image", "file_id": ident}, fz.ids),
    st.builds(lambda text: {"type": "input_text", "text": text}, fz.questions),
    fz.parts,
)
RESPONSE_INPUT = [
    {
        "role": "user",
        "content": [
            {"type": "input_image", "image_url": fz.PNG_URL},
            {"type": "input_text", "text": "what color is the shape?"},
        ],
    }
]
RESPONSE_FIELDS = {
    **fz.generation_fields,
    "input": st.one_of(
        fz.questions,
        st.lists(
            st.fixed_dictionaries(
                {"role": fz.roles},
                optional={
                    "type": st.sampled_from(["message", "function_call", ""]),
                    "content": st.one_of(
                        fz.questions, st.lists(response_parts, max_size=4), fz.json_values
                    ),
                },
            ),
            max_size=4,
        ),
        st.just(RESPONSE_INPUT),
    ),
    "instructions": fz.questions,
    "max_output_tokens": fz.max_tokens,
    "metadata": fz.metadata,
    "stream": st.booleans(),
    "background": st.booleans(),
    "store": st.booleans(),
    "include": st.one_of(st.just(["message.output_text.logprobs"]), fz.json_values),
    "text": st.one_of(st.just({"format": {"type": "text"}}), fz.json_values),
    "tools": fz.json_values,
    "previous_response_id": fz.json_values,
    "service_tier": st.one_of(
        st.sampled_from(["auto", "default", "flex", "priority", "scale"]), fz.strings
    ),
    "webhook": fz.webhooks,
}
moderation_parts = st.lists(st.one_of(fz.image_part(), fz.text_part), min_size=1, max_size=4)
categories = st.one_of(
    st.dictionaries(
        fz.strings,
        st.one_of(
            fz.questions,
            st.fixed_dictionaries(
                {"question": fz.either(fz.questions)},
                optional={"threshold": fz.either(fz.unit_floats)},
            ),
        ),
        max_size=4,
    ),
    st.just({f"c{n}": "is there a triangle?" for n in range(33)}),
)
MODERATION_BASES: list[dict[str, Any]] = [
    {"input": "is there a triangle?"},
    {"input": fz.VALID_CONTENT},
    {"input": fz.VALID_CONTENT, "categories": {"shape": "is there a circle?"}},
]
MODERATION_FIELDS = {
    "input": st.one_of(
        fz.strings,
        st.lists(fz.strings, max_size=4),
        st.just(["is it red?"] * 33),
        moderation_parts,
    ),
    "model": fz.models,
    "categories": categories,
    "thresholds": st.dictionaries(
        st.one_of(st.just("shape"), fz.strings), fz.either(fz.unit_floats), max_size=3
    ),
}
BATCH_FIELDS = {
    "endpoint": st.one_of(
        st.sampled_from(["/v1/chat/completions", "/v1/moderations", "/v1/embeddings", ""]),
        fz.strings,
    ),
    "completion_window": st.one_of(st.sampled_from(["24h", "1h", "24H", ""]), fz.strings),
    "metadata": fz.metadata,
    "webhook": fz.webhooks,
}
POST_ROUTES = [
    "/v1/jobs",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/moderations",
    "/v1/files",
    "/v1/batches",
    "/v1/jobs/{job}/cancel",
    "/v1/batches/{batch}/cancel",
]


@pytest.fixture(scope="module")
def tally(backend: str) -> Iterator[Tally]:
    """The statuses of this module's cases, reported at its end."""
    yield from tally_fixture("request_fuzz", backend)


def known_ids(known: dict[str, str]) -> st.SearchStrategy[str]:
    """Real ids (this tenant's and another's) and any other text."""
    return st.one_of(st.sampled_from(sorted(known.values())), fz.ids.filter(is_utf8))


def is_utf8(value: str) -> bool:
    """Whether `value` can be sent in a URL or a form (no lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def send_json(
    app: Flask, tally: Tally, endpoint: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    """POST `body` as JSON and check the answer."""
    response = app.test_client().post(
        path, data=fz.to_json(body), headers=headers, content_type="application/json"
    )
    synchronous = endpoint in {"chat", "moderations", "responses"}
    check_answer(tally, endpoint, response, (path, headers, body), synchronous=synchronous)


@fuzz(250)
@given(data=st.data())
def test_job_json_bodies(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    body = data.draw(fz.bodies(JOB_BASES, JOB_FIELDS), "body")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    send_json(fuzz_app, tally, "jobs.create", "/v1/jobs", body, headers)


form_values = st.one_of(
    st.sampled_from(
        ["1", "0", "-1", "4096", "4097", "1e999", "nan", "inf", "9" * 5000, "0x10", "1_000", "²"]
    ),
    st.sampled_from(["true", "start,completed", "start, bogus", "{}", "[]", " 7 "]),
    fz.form_text,
)
upload_bytes = st.one_of(
    st.sampled_from([fz.PNG, fz.JPEG, b"", fz.PNG[:40], b"GIF89a", b"\x89PNG\r\n\x1a\n"]),
    st.binary(max_size=300),
)
filenames = st.one_of(
    st.sampled_from(["x.png", "", "a" * 255, "a" * 256, "a" * 5000, "../../x", "\x00.png"]),
    fz.form_text,
)
file_types = st.sampled_from(["image/png", "application/octet-stream", "", "text/plain"])


@fuzz(150)
@given(data=st.data())
def test_job_multipart_uploads(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    fields = ["question", "webhook_events_filter", *fz.generation_fields, "metadata", "webhook"]
    form: dict[str, Any] = {"question": "what color is the shape?"}
    form.update(
        data.draw(st.dictionaries(st.sampled_from(fields), form_values, max_size=4), "fields")
    )
    if not data.draw(fz.rarely(), "without an image"):
        image = data.draw(upload_bytes, "image")
        name = data.draw(filenames, "filename")
        form["image"] = (io.BytesIO(image), name, data.draw(file_types, "type"))
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    response = fuzz_app.test_client().post(
        "/v1/jobs", data=form, headers=headers, content_type="multipart/form-data"
    )
    check_answer(tally, "jobs.upload", response, (headers, form))


@fuzz(300)
@given(data=st.data())
def test_raw_bodies_and_content_types(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    known: dict[str, str],
    tally: Tally,
    data: st.DataObject,
) -> None:
    path = data.draw(st.sampled_from(POST_ROUTES), "path").format(**known)
    body = data.draw(fz.raw_bodies, "body")
    content_type = data.draw(fz.content_types, "content_type")
    length = data.draw(fz.content_lengths, "content_length")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    environ = {"CONTENT_TYPE": content_type}
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    response = fuzz_app.test_client().post(
        path, input_stream=io.BytesIO(body), headers=headers, environ_overrides=environ
    )
    endpoint = "raw " + path.split("/")[2]
    synchronous = path in {"/v1/chat/completions", "/v1/moderations"}
    request = (path, content_type, length, headers, body)
    check_answer(tally, endpoint, response, request, synchronous=synchronous)


@fuzz(200)
@given(data=st.data())
def test_job_reads_and_cancels(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    known: dict[str, str],
    tally: Tally,
    data: st.DataObject,
) -> None:
    kind = data.draw(st.sampled_from(["list", "get", "cancel"]), "kind")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    client = fuzz_app.test_client()
    if kind == "list":
        query = data.draw(query_strings(known, {"status": fz.statuses}), "query")
        response = client.get("/v1/jobs", query_string=query, headers=headers)
    else:
        job_id = quote(data.draw(known_ids(known), "id"), safe="")
        suffix = "/cancel" if kind == "cancel" else ""
        method = client.post if kind == "cancel" else client.get
        response = method(f"/v1/jobs/{job_id}{suffix}", headers=headers)
    check_answer(tally, f"jobs.{kind}", response, (kind, headers, response.request.full_path))


def query_strings(
    known: dict[str, str], fields: dict[str, st.SearchStrategy[str]]
) -> st.SearchStrategy[str]:
    """`?limit=&after=` (and the endpoint's other fields), repeated or raw."""
    values = {
        "limit": fz.limits.filter(is_utf8),
        "after": known_ids(known),
        **{name: s.filter(is_utf8) for name, s in fields.items()},
    }
    pairs = st.lists(
        st.one_of(*(st.tuples(st.just(name), s) for name, s in values.items())), max_size=4
    )
    return st.one_of(pairs.map(urlencode), fz.latin1)


@fuzz(150)
@given(data=st.data())
def test_chat_completion_bodies(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    body = data.draw(fz.bodies([{"messages": fz.VALID_MESSAGES}], CHAT_FIELDS), "body")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    send_json(fuzz_app, tally, "chat", "/v1/chat/completions", body, headers)


@fuzz(150)
@given(data=st.data())
def test_response_bodies(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    body = data.draw(fz.bodies([{"input": RESPONSE_INPUT}], RESPONSE_FIELDS), "body")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    send_json(fuzz_app, tally, "responses", "/v1/responses", body, headers)


@fuzz(150)
@given(data=st.data())
def test_moderation_bodies_and_policies(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    kind = data.draw(st.sampled_from(["moderate", "moderate", "put_policy", "get_policy"]))
    if kind == "moderate":
        body = data.draw(fz.bodies(MODERATION_BASES, MODERATION_FIELDS), "body")
        send_json(fuzz_app, tally, "moderations", "/v1/moderations", body, headers)
        return
    client = fuzz_app.test_client()
    if kind == "put_policy":
        body = data.draw(fz.either(st.fixed_dictionaries({"categories": categories})), "body")
        response = client.put(
            "/v1/moderations/policy",
            data=fz.to_json(body),
            headers=headers,
            content_type="application/json",
        )
        check_answer(tally, "moderations.policy", response, (headers, body))
    response = client.get("/v1/moderations/policy", headers=headers)
    check_answer(tally, "moderations.policy", response, headers)


preset_names = st.one_of(
    st.sampled_from(["shop", "customer-service", "a" * 64, "a" * 65, "-x", "x.y_z", "%00"]),
    fz.form_text.filter(lambda name: "/" not in name and "?" not in name and "#" not in name),
)


@fuzz(100)
@given(data=st.data())
def test_presets(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    name = data.draw(preset_names, "name")
    path = "/v1/presets/" + quote(name, safe="")
    client = fuzz_app.test_client()
    kind = data.draw(st.sampled_from(["put", "put", "get", "delete", "list"]))
    if kind == "put":
        body = data.draw(
            fz.either(st.fixed_dictionaries({"system_prompt": fz.either(fz.strings)})), "body"
        )
        response = client.put(
            path, data=fz.to_json(body), headers=headers, content_type="application/json"
        )
    elif kind == "list":
        response = client.get("/v1/presets", headers=headers)
    else:
        response = getattr(client, kind)(path, headers=headers)
    check_answer(tally, "presets", response, (path, headers))


@fuzz(120)
@given(data=st.data())
def test_file_uploads(
    fuzz_app: Flask, fuzz_auth: dict[str, str], tally: Tally, data: st.DataObject
) -> None:
    form: dict[str, Any] = {}
    odd_purpose = st.one_of(st.sampled_from(["batch_output", "fine-tune", ""]), fz.form_text)
    if not data.draw(fz.rarely(), "without a purpose"):
        form["purpose"] = data.draw(odd_purpose if data.draw(fz.rarely()) else st.just("batch"))
    if not data.draw(fz.rarely(), "without a file"):
        content = data.draw(
            st.one_of(
                st.sampled_from([batch_input(), batch_input(3), b"", b"\n\n", b"{}\n[1]\n"]),
                st.binary(max_size=500),
                st.builds(lambda v: fz.to_json(v) + b"\n", fz.json_values),
            ),
            "content",
        )
        form["file"] = (io.BytesIO(content), data.draw(filenames, "filename"))
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    response = fuzz_app.test_client().post(
        "/v1/files", data=form, headers=headers, content_type="multipart/form-data"
    )
    check_answer(tally, "files.upload", response, (headers, form))


@fuzz(120)
@given(data=st.data())
def test_file_reads_and_deletes(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    known: dict[str, str],
    tally: Tally,
    data: st.DataObject,
) -> None:
    kind = data.draw(st.sampled_from(["list", "get", "content", "delete"]), "kind")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    client = fuzz_app.test_client()
    if kind == "list":
        query = data.draw(query_strings(known, {"purpose": fz.form_text, "order": fz.form_text}))
        response = client.get("/v1/files", query_string=query, headers=headers)
    else:
        file_id = data.draw(known_ids(known), "id")
        if kind == "delete" and file_id == known["file"]:
            file_id += "x"  # keep the file the batch cases use
        suffix = "/content" if kind == "content" else ""
        method = client.delete if kind == "delete" else client.get
        response = method(f"/v1/files/{quote(file_id, safe='')}{suffix}", headers=headers)
    check_answer(tally, f"files.{kind}", response, (kind, headers, response.request.full_path))


@fuzz(150)
@given(data=st.data())
def test_batches(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    known: dict[str, str],
    tally: Tally,
    data: st.DataObject,
) -> None:
    kind = data.draw(st.sampled_from(["create", "create", "list", "get", "cancel"]), "kind")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    client = fuzz_app.test_client()
    if kind == "create":
        base = {"input_file_id": known["file"], "endpoint": "/v1/chat/completions"}
        fields = {**BATCH_FIELDS, "input_file_id": known_ids(known)}
        body = data.draw(fz.bodies([base], fields), "body")
        send_json(fuzz_app, tally, "batches.create", "/v1/batches", body, headers)
        return
    if kind == "list":
        query = data.draw(query_strings(known, {}), "query")
        response = client.get("/v1/batches", query_string=query, headers=headers)
    else:
        batch_id = data.draw(known_ids(known), "id")
        if kind == "cancel" and batch_id == known["batch"]:
            batch_id += "x"  # keep the batch the other cases read
        suffix = "/cancel" if kind == "cancel" else ""
        method = client.post if kind == "cancel" else client.get
        response = method(f"/v1/batches/{quote(batch_id, safe='')}{suffix}", headers=headers)
    check_answer(tally, f"batches.{kind}", response, (kind, headers, response.request.full_path))


@fuzz(150)
@given(data=st.data())
def test_other_routes_methods_and_paths(
    fuzz_app: Flask,
    fuzz_auth: dict[str, str],
    known: dict[str, str],
    tally: Tally,
    data: st.DataObject,
) -> None:
    """Routes without a body (models, the webhook secret, health, the playground), under any
    method, with any query string, and paths that name no route."""
    path = data.draw(
        st.one_of(
            st.sampled_from(
                [
                    "/v1/models",
                    "/v1/models/fuzz-glm4v",
                    "/v1/models/gpt-4o",
                    "/v1/webhooks/default/secret",
                    "/v1/webhooks/other/secret",
                    "/healthz",
                    "/metrics",
                    "/",
                    "/v1/",
                    "/v1/jobs/",
                    "/v1//jobs",
                    "/v2/jobs",
                    "/v1/presets",
                    "/v1/presets/x",
                    "/openapi.json",
                    "/docs",
                ]
            ),
            st.builds(lambda s: "/v1/" + quote(s), fz.form_text),
            st.builds(lambda i: f"/v1/models/{quote(i, safe='')}", known_ids(known)),
        ),
        "path",
    )
    method = data.draw(
        st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        "method",
    )
    query = data.draw(fz.latin1, "query")
    headers = data.draw(fz.extra_headers(fuzz_auth), "headers")
    response = fuzz_app.test_client().open(path, method=method, query_string=query, headers=headers)
    check_answer(tally, "other", response, (method, path, query, headers))
