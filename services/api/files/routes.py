"""`/v1/files`: JSONL uploads for batches, and batch results (OpenAI Files shape)."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request

from services.api.context import runtime, tenant_id
from services.api.request_parsing import page_limit
from services.core.errors import InvalidRequestError
from services.core.files import (
    check_expires_after,
    delete_file,
    file_chunks,
    file_life_s,
    get_file,
    list_files,
    read_stream,
    store_file,
)
from services.core.serialize import file_response, openai_page

bp = Blueprint("files", __name__, url_prefix="/v1/files")
MAX_FILENAME_CHARS = 255


def checked_filename(raw: str | None) -> str:
    """The upload's file name without control characters, or a 400 when it is too long."""
    name = "".join(char for char in (raw or "") if char.isprintable()).strip() or "input.jsonl"
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidRequestError(
            f"file name is over {MAX_FILENAME_CHARS} characters", param="file"
        )
    return name


def content_disposition(filename: str) -> str:
    """An attachment header for any file name: an ASCII fallback plus the UTF-8 name
    (RFC 6266), so quotes and non-Latin names can neither break nor inject headers."""
    fallback = "".join(c if c.isascii() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def requested_life_s() -> int | None:
    """The seconds of OpenAI's `expires_after[anchor]` + `expires_after[seconds]` form
    fields, or None when the upload sets neither."""
    anchor = request.form.get("expires_after[anchor]")
    seconds = request.form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    text = (seconds or "").strip()
    # Short ASCII digits only: int() refuses other digits and very long numbers with errors.
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else None
    return check_expires_after(anchor, number, "expires_after")


@bp.post("")
def upload_file() -> tuple[Response, int]:
    """Store an uploaded file (`file` + `purpose=batch`, optionally `expires_after`),
    streamed into chunks."""
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequestError("multipart upload needs a 'file'", param="file")
    purpose = request.form.get("purpose", "")
    if purpose != "batch":
        raise InvalidRequestError("purpose must be 'batch'", param="purpose")
    rt = runtime()
    file = store_file(
        rt.sessions,
        tenant_id(),
        purpose,
        checked_filename(upload.filename),
        read_stream(upload.stream),
        expires_after_s=file_life_s(rt.settings, requested_life_s()),
    )
    return jsonify(file_response(file)), 200


@bp.get("")
def list_tenant_files() -> Response:
    """The tenant's files, newest first (`?purpose=&limit=&after=`, as OpenAI pages them)."""
    with runtime().sessions() as session:
        page, has_more = list_files(
            session,
            tenant_id(),
            purpose=request.args.get("purpose"),
            limit=page_limit(),
            after=request.args.get("after"),
        )
        data = [file_response(file) for file in page]
    return jsonify(openai_page(data, has_more))


@bp.delete("/<file_id>")
def remove_file(file_id: str) -> Response:
    """Delete the file (a 409 while an unfinished batch reads it)."""
    with runtime().unit_of_work() as session:
        file = delete_file(session, tenant_id(), file_id)
        return jsonify({"id": file.id, "object": "file", "deleted": True})


@bp.get("/<file_id>")
def retrieve_file(file_id: str) -> Response:
    """The file object."""
    with runtime().sessions() as session:
        return jsonify(file_response(get_file(session, tenant_id(), file_id)))


@bp.get("/<file_id>/content")
def file_content(file_id: str) -> Response:
    """The file's bytes, streamed a chunk at a time."""
    rt = runtime()
    with rt.sessions() as session:
        file = get_file(session, tenant_id(), file_id)
        filename = file.filename
    headers = {"Content-Disposition": content_disposition(filename)}
    return Response(
        file_chunks(rt.sessions, file_id), mimetype="application/jsonl", headers=headers
    )
