"""Hypothesis strategies for request parts: JSON values of every type and size, the fields
of each endpoint at and past their limits, raw bodies, content types and headers.

Every URL drawn here points at a closed loopback port, or cannot be fetched at all: no
case may reach past this machine. Free text never contains "://" for the same reason.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.corpus import encode, picture
from tests.fuzz.support import closed_loopback_port

CLOSED_PORT = closed_loopback_port()
PNG = encode(picture(size=(16, 16)), "PNG")
JPEG = encode(picture(size=(16, 16)), "JPEG")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
JPEG_URL = "data:image/jpeg;base64," + base64.b64encode(JPEG).decode()
MODEL = "fuzz-glm4v"  # the fuzz app serves its own model name (see conftest)

# Raw JSON tokens a client can send that `json.dumps` never writes: each is drawn as its
# placeholder string and swapped in after encoding (see `to_json`).
RAW_TOKENS = ["1e999", "-1e999", "1E400", "-0", "0.0000000000000000000000000001e-400"]
PLACEHOLDER = "\x02raw{}\x03"

text = st.text(st.characters(exclude_categories=()), max_size=40).filter(lambda s: "://" not in s)
edge_text = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",  # a lone surrogate: valid in JSON text, not encodable as UTF-8
        "\u202e\u0301",
        "😀" * 300,
        "x" * 10_000,
        "\n" * 500,
        "null",
        "0",
    ]
)
strings = st.one_of(text, edge_text)
# Text a form field, a query string or a path can carry (UTF-8, so no lone surrogates).
form_text = st.one_of(
    st.text(max_size=40).filter(lambda s: "://" not in s),
    edge_text.filter(lambda s: s != "\ud800"),
)
latin1 = st.text(st.characters(max_codepoint=255), max_size=80)
# What a server can hand the app as a header value: Latin-1, no line breaks.
header_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=80)


def rarely() -> st.SearchStrategy[bool]:
    """True about one time in ten. (Hypothesis favours the ends of a range, so the rare
    outcome is a value in the middle.)"""
    return st.integers(0, 9).map(lambda n: n == 5)


edge_ints = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, -(2**70), 10**400]
)
integers = st.one_of(st.integers(), edge_ints)
edge_floats = st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan])
floats = st.one_of(st.floats(), edge_floats)
raw_numbers = st.sampled_from([PLACEHOLDER.format(n) for n in range(len(RAW_TOKENS))])
scalars = st.one_of(st.none(), st.booleans(), integers, floats, raw_numbers, strings)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(strings, children, max_size=4)
    ),
    max_leaves=12,
)


def to_json(value: Any) -> bytes:
    """`value` as JSON text, with NaN/Infinity as Python writes them and the raw tokens swapped
    in for their placeholders."""
    document = json.dumps(value, allow_nan=True)
    for index, token in enumerate(RAW_TOKENS):
        document = document.replace(json.dumps(PLACEHOLDER.format(index)), token)
    return document.encode()


def either(field: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's own plausible values, or any JSON value at all."""
    return st.one_of(field, field, json_values)


# Image references: valid small images, every malformed data URL, and URLs that cannot be
# fetched (a closed loopback port, or a scheme the API refuses before any connection).
image_refs = st.one_of(
    st.sampled_from(
        [
            PNG_URL,
            JPEG_URL,
            "",
            "data:",
            "data:image/png;base64,",
            "data:image/png;base64,AAAA",
            "data:image/png;base64,====",
            "data:image/png;base64," + base64.b64encode(PNG).decode()[:-7],
            "data:image/png," + PNG.decode("latin-1"),
            "data:;base64," + base64.b64encode(PNG).decode(),
            "DATA:IMAGE/PNG;BASE64," + base64.b64encode(PNG).decode(),
            "data:image/png;base64,\n" + base64.b64encode(PNG).decode(),
            "data:image/png;base64," + base64.urlsafe_b64encode(JPEG).decode(),
            "data:text/plain;base64," + base64.b64encode(b"not an image").decode(),
            "data:image/png;charset=utf-8;name=x;base64," + base64.b64encode(PNG).decode(),
            "data:image/png;base64," + "A" * 200_000,
            f"http://127.0.0.1:{CLOSED_PORT}/x.png",
            f"https://127.0.0.1:{CLOSED_PORT}/x.png",
            f"http://127.0.0.1:{CLOSED_PORT}/" + "x" * 5000,
            "http://127.0.0.1:99999/x.png",
            "http://127.0.0.1:0/x.png",
            "http://127.0.0.1:abc/x.png",
            "http://",
            "http:///x.png",
            "https://[::1",
            "file:///etc/hostname",
            "ftp://127.0.0.1/x.png",
            "javascript:alert(1)",
        ]
    ),
    strings,
)
questions = st.one_of(
    st.sampled_from(["what color is the shape?", "x" * 8000, "x" * 8001, "  q  "]), strings
)
max_tokens = st.one_of(st.sampled_from([1, 256, 4096, 4097, 0, -1, 10**400]), integers)
unit_floats = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 2.0000001, -0.5, 1.0000001]),
    st.floats(-1, 3),
    floats,
)
seeds = st.one_of(st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1]), integers)
stops = st.one_of(strings, st.lists(strings, max_size=6))
models = st.one_of(st.sampled_from([MODEL, "gpt-4o", ""]), strings)
metadata = st.one_of(
    st.dictionaries(strings, strings, max_size=17),
    st.just({f"k{n}": "v" * 512 for n in range(16)}),
)
webhooks = st.one_of(
    st.sampled_from(
        [
            f"http://127.0.0.1:{CLOSED_PORT}/hook",
            f"http://127.0.0.1:{CLOSED_PORT}/" + "h" * 1975,
            f"http://127.0.0.1:{CLOSED_PORT}/" + "h" * 2000,
            "http://127.0.0.1:99999999999999999999/",
            "http://127.0.0.1:-1/",
            "http://[::1]:1/",
            "http://0x7f.1:1/",
            f"http://127.0.0.1:{CLOSED_PORT}/\x00",
            f"http://127.0.0.1:{CLOSED_PORT}/\ud800",
            "http://\x00/",
            "http://\ud800/",
            "ftp://127.0.0.1/",
            "http://",
            "",
        ]
    ),
    strings,
)
event_filters = st.one_of(
    st.lists(st.sampled_from(["start", "completed", "output", "", "START"]), max_size=4),
    st.lists(strings, max_size=3),
)
generation_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": models,
    "max_tokens": max_tokens,
    "max_completion_tokens": max_tokens,
    "temperature": unit_floats,
    "top_p": unit_floats,
    "seed": seeds,
    "stop": stops,
    "enable_thinking": st.booleans(),
    "preset": st.one_of(st.sampled_from(["customer-service", "no-such-preset", ""]), strings),
    "logprobs": st.booleans(),
    "top_logprobs": st.one_of(st.sampled_from([0, 3, 20, 21, -1]), integers),
    "min_tokens": st.one_of(st.sampled_from([0, 1, 5000]), integers),
    "ignore_eos": st.booleans(),
    "response_format": st.one_of(
        st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
                {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}},
                {"type": "xml"},
            ]
        ),
        json_values,
    ),
    "guided_choice": st.one_of(st.lists(strings, max_size=4), json_values),
    "guided_regex": st.one_of(st.sampled_from(["[a-z]+", "(open", "a{99999}"]), strings),
}


def image_part(url: st.SearchStrategy[Any] = image_refs) -> st.SearchStrategy[dict[str, Any]]:
    """An OpenAI `image_url` content part, in its object or bare-string form."""
    return st.one_of(
        st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, url),
        st.builds(lambda u: {"type": "image_url", "image_url": u}, url),
        st.builds(lambda u: {"type": "image_url", "image_url": {"url": u, "detail": "low"}}, url),
    )


text_part = st.builds(lambda t: {"type": "text", "text": t}, questions)
parts = st.one_of(
    image_part(),
    text_part,
    st.fixed_dictionaries({"type": st.sampled_from(["input_audio", "image", "video_url", ""])}),
    json_values,
)
roles = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "robot", ""]), strings)
message = st.fixed_dictionaries(
    {"role": roles},
    optional={"content": st.one_of(questions, st.lists(parts, max_size=5), json_values)},
)
VALID_CONTENT = [
    {"type": "image_url", "image_url": {"url": PNG_URL}},
    {"type": "text", "text": "what color is the shape?"},
]
VALID_MESSAGES = [{"role": "user", "content": VALID_CONTENT}]
VALID_JOB = {"image": PNG_URL, "question": "what color is the shape?"}


@st.composite
def many_messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Messages and parts at and past the per-request caps (messages, parts, images)."""
    images = draw(st.sampled_from([1, 8, 9]))
    count = draw(st.sampled_from([1, 63, 64, 65]))
    texts = draw(st.sampled_from([1, 120, 128, 129]))
    content = [{"type": "image_url", "image_url": {"url": PNG_URL}}] * images
    content += [{"type": "text", "text": "q"}] * texts
    return [{"role": "user", "content": "q"}] * (count - 1) + [{"role": "user", "content": content}]


messages = st.one_of(
    st.lists(message, max_size=4),
    st.lists(st.builds(lambda c: {"role": "user", "content": c}, st.lists(parts, max_size=4))),
    many_messages(),
    st.just(VALID_MESSAGES),
)


@st.composite
def mutated(
    draw: st.DrawFn, base: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]]
) -> dict[str, Any]:
    """`base` (a valid body) with up to three fields replaced, removed or set to any JSON
    value, and now and then a field the endpoint does not know."""
    body = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        if draw(rarely()):
            body.pop(name, None)
        else:
            body[name] = draw(either(fields[name]))
    if draw(rarely()):
        body[draw(strings)] = draw(json_values)
    return body


def bodies(
    bases: list[dict[str, Any]], fields: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    """Bodies of an endpoint: mostly near-valid ones (so cases reach past the first check),
    some made of its fields with arbitrary values, and any JSON value at all."""
    near_valid = st.one_of(*(mutated(base, fields) for base in bases))
    loose = st.fixed_dictionaries({}, optional={name: either(s) for name, s in fields.items()})
    return st.one_of(near_valid, near_valid, near_valid, loose, json_values)


content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "application/json; charset=bogus",
            "application/JSON",
            "application/vnd.api+json",
            "application/json;;;",
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data; boundary=" + "b" * 200,
            "application/octet-stream",
            "image/png",
            "*/*",
            "",
        ]
    ),
    header_text,
)
# Bodies of any bytes: JSON in other encodings, cut short, nested deep; form encodings with
# bad boundaries; binary noise.
raw_bodies = st.one_of(
    st.binary(max_size=2000),
    st.builds(to_json, json_values),
    st.builds(lambda v: json.dumps(v).encode("utf-16"), json_values),
    st.builds(lambda v: b"\xef\xbb\xbf" + to_json(v), json_values),
    st.builds(
        lambda body, cut: to_json(body)[:cut],
        st.just({"image": PNG_URL, "question": "q"}),
        st.integers(0, 200),
    ),
    st.builds(lambda n: b"[" * n + b"]" * n, st.sampled_from([900, 1000, 3000, 20_000])),
    st.builds(lambda n: b'{"a":' * n + b"1" + b"}" * n, st.sampled_from([999, 5000])),
    st.sampled_from(
        [
            b"",
            b"null",
            b"NaN",
            b"1e999",
            b"9" * 5000,
            b'"' + b"x" * 100_000 + b'"',
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
            + PNG
            + b"\r\n--xyz--\r\n",
            b'--xyz\r\nContent-Disposition: form-data; name="image"\r\n\r\nunterminated',
            b"purpose=batch&file=x",
            b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n' * 2000
            + b"--xyz--\r\n",
            b"\xff\xfe\x00\x00",
        ]
    ),
)
content_lengths = st.sampled_from(
    [None, "0", "1", "-1", "abc", "10, 10", " 5", "1e3", "", str(10**30), "+5", "0x10", "+"]
)
idempotency_keys = st.one_of(
    st.sampled_from(["fuzz-key", "k" * 255, "k" * 256, "k" * 10_000, "", " ", "caf\xe9", "\x00"]),
    header_text,
)
prefer = st.one_of(
    st.sampled_from(
        [
            "wait=abc",
            "wait=1",
            "wait=0",
            "wait=0.001",
            "wait=-1",
            "wait=1e999",
            "wait=" + "9" * 500,
            "wait=" + "9" * 5000,
            "respond-async, wait=5",
            "wait",
        ]
    ),
    header_text,
)


def auth_headers(valid: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """Mostly the valid key; sometimes none, another scheme, or a token of any length."""
    bad = st.one_of(
        st.just({}),
        st.builds(lambda t: {"Authorization": t}, header_text),
        st.sampled_from(
            [
                {"Authorization": "Bearer"},
                {"Authorization": "Bearer " + "k" * 10_000},
                {"Authorization": "Basic dXNlcjpwYXNz"},
                {"Authorization": valid["Authorization"] + "x"},
                {"Authorization": valid["Authorization"].lower()},
            ]
        ),
    )
    return rarely().flatmap(lambda bad_key: bad if bad_key else st.just(valid))


ODD_HEADERS: dict[str, st.SearchStrategy[str]] = {
    "Idempotency-Key": idempotency_keys,
    "Prefer": prefer,
    "Accept": header_text,
    "Accept-Encoding": st.sampled_from(["gzip", "br, zstd", "x" * 2000]),
    "X-Request-Id": header_text,
    "Transfer-Encoding": st.sampled_from(["chunked", "gzip", "x"]),
}


@st.composite
def extra_headers(draw: st.DrawFn, valid_auth: dict[str, str]) -> dict[str, str]:
    """The key, and now and then an `Idempotency-Key`, a `Prefer` or another odd header."""
    headers = dict(draw(auth_headers(valid_auth)))
    for name, values in ODD_HEADERS.items():
        if draw(rarely()):
            headers[name] = draw(values)
    return headers


ids = st.one_of(
    st.sampled_from(["job_", "file-", "batch_", ".", "..", "%00", "a/b", "x" * 10_000, "\x00"]),
    strings,
)
limits = st.one_of(
    st.sampled_from(
        ["0", "1", "20", "100", "101", "-1", "", "1e3", " 5", "1.5", "٣", "²", "9" * 30, "9" * 5000]
    ),
    latin1,
    strings,
)
statuses = st.one_of(
    st.sampled_from(["queued", "running", "succeeded", "failed", "canceled", "cancelled", ""]),
    strings,
)
