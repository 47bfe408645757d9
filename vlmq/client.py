"""A minimal HTTP client of the vlmq API, for the CLI and the benchmarks (standard library only).

Every call raises `ApiError` (the server's own error message, or what kept the request from
reaching it, with a hint) instead of urllib's exceptions.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from http.client import HTTPResponse
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

# What to try next, by status code of a refused request.
HINTS = {
    401: "check the key: `vlmq keys list` shows yours, `vlmq keys create --tenant NAME` makes one",
    404: "check the id, and that it was made with this key's tenant",
    413: "the request is larger than this deployment accepts (VLMQ_MAX_BODY_BYTES)",
    429: "wait and retry (the answer's Retry-After says how long)",
    503: "a dependency is down; retry shortly",
}


class ApiError(Exception):
    """A request the API refused or that never reached it: a message and a hint."""

    def __init__(self, message: str, hint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


def refusal(error: HTTPError) -> ApiError:
    """The server's error message of a non-2xx answer (JSON or not)."""
    raw = error.read().decode(errors="replace")
    try:
        detail = json.loads(raw)["error"]
        message = str(detail.get("message") or detail)
        code = detail.get("code") or detail.get("type")
        if code:
            message = f"{message} ({code})"
    except (ValueError, KeyError, TypeError, AttributeError):
        first = next((line.strip() for line in raw.splitlines() if line.strip()), "")
        message = f"{error.reason}: {first[:200]}" if first else str(error.reason)
    hint = HINTS.get(error.code, "")
    return ApiError(f"HTTP {error.code}: {message}", hint, error.code)


def origin(url: str) -> tuple[str, str, int | None]:
    """A URL's scheme, host and port."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class KeyStaysHome(HTTPRedirectHandler):
    """Follows redirects, sending the API key only to the origin it was given for (urllib
    would carry `Authorization` to wherever a redirect points)."""

    def redirect_request(
        self, req: Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Request | None:
        """The request to the redirect's target, without the key if it is elsewhere."""
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and origin(newurl) != origin(req.full_url):
            redirected.remove_header("Authorization")
        return redirected


OPENER = build_opener(KeyStaysHome)


@contextlib.contextmanager
def opened(request: Request, timeout_s: float) -> Iterator[HTTPResponse]:
    """The request's answer (redirects followed, the key kept to its origin), with every
    failure turned into an `ApiError`."""
    try:
        with OPENER.open(request, timeout=timeout_s) as response:
            yield response
    except HTTPError as error:
        raise refusal(error) from None
    except (URLError, ConnectionError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise ApiError(
            f"cannot reach the API at {request.full_url.split('/v1/', 1)[0]}: {reason}",
            "is `vlmq up` (or `vlmq api`) running there? Pass --url or set VLMQ_URL",
        ) from None


def encode_multipart(
    fields: dict[str, str], files: dict[str, tuple[str, bytes]]
) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        header = (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(header.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def submit_upload(
    base: str,
    key: str,
    image: tuple[str, bytes],
    fields: dict[str, str],
    wait_s: int,
    timeout_s: float,
) -> dict[str, Any]:
    """`POST /v1/jobs` with a multipart upload and `Prefer: wait`; returns the job object."""
    body, content_type = encode_multipart(fields, {"image": image})
    request = Request(  # noqa: S310 (the caller's own API URL)
        f"{base}/v1/jobs",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {key}",
            "Prefer": f"wait={wait_s}",
            "Content-Type": content_type,
        },
    )
    with opened(request, timeout_s) as response:
        job: dict[str, Any] = json.load(response)
    return job


def get_job(base: str, key: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    """`GET /v1/jobs/{id}`."""
    request = Request(f"{base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    with opened(request, timeout_s) as response:
        job: dict[str, Any] = json.load(response)
    return job


def api_request(
    base: str, key: str, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON request to the API; returns the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {key}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = Request(f"{base}{path}", data=data, method=method, headers=headers)  # noqa: S310
    with opened(request, 60) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def upload_batch_file(base: str, key: str, filename: str, data: bytes) -> dict[str, Any]:
    """`POST /v1/files` with `purpose=batch`."""
    body, content_type = encode_multipart({"purpose": "batch"}, {"file": (filename, data)})
    request = Request(  # noqa: S310
        f"{base}/v1/files",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
    )
    with opened(request, 600) as response:
        file: dict[str, Any] = json.load(response)
    return file


def download_file(base: str, key: str, file_id: str, destination: str) -> None:
    """Save `GET /v1/files/{id}/content` to `destination`, a piece at a time."""
    request = Request(  # noqa: S310
        f"{base}/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {key}"}
    )
    with opened(request, 600) as response, open(destination, "wb") as out:
        while piece := response.read(1 << 20):
            out.write(piece)
