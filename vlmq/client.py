"""A minimal HTTP client of the vlmq API, for the CLI and the benchmarks (standard library only)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.request import Request, urlopen


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
    with urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        job: dict[str, Any] = json.load(response)
    return job


def get_job(base: str, key: str, job_id: str, timeout_s: float) -> dict[str, Any]:
    """`GET /v1/jobs/{id}`."""
    request = Request(f"{base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    with urlopen(request, timeout=timeout_s) as response:  # noqa: S310
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
    with urlopen(request, timeout=60) as response:  # noqa: S310
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
    with urlopen(request, timeout=600) as response:  # noqa: S310
        file: dict[str, Any] = json.load(response)
    return file


def download_file(base: str, key: str, file_id: str, destination: str) -> None:
    """Save `GET /v1/files/{id}/content` to `destination`, a piece at a time."""
    request = Request(  # noqa: S310
        f"{base}/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {key}"}
    )
    with urlopen(request, timeout=600) as response, open(destination, "wb") as out:  # noqa: S310
        while piece := response.read(1 << 20):
            out.write(piece)
