"""`/v1/files`: JSONL uploads for batches, and batch results (OpenAI Files shape)."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, request

from services.api.context import runtime, tenant_id
from services.api.openapi.declare import LIMIT, Param, after, operation, text
from services.api.request_parsing import page_limit
from services.api.respond import respond
from services.core.errors import InvalidRequestError
from services.core.files import (
    PURPOSES,
    UPLOAD_PURPOSES,
    check_expires_after,
    delete_file,
    file_chunks,
    file_life_s,
    get_file,
    list_files,
    store_file,
    upload_chunks,
)
from services.core.responses.files import FileDeletedResponse, FileListResponse, FileResponse
from services.core.storage import count_stored, refuse_over_storage

bp = Blueprint("files", __name__, url_prefix="/v1/files")
MAX_FILENAME_CHARS = 255
FILE_FORM = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
    },
}
FILE_LINKS = {
    "GetFile": {"operationId": "getFile", "parameters": {"file_id": "$response.body#/id"}},
    "DeleteFile": {"operationId": "deleteFile", "parameters": {"file_id": "$response.body#/id"}},
}
PURPOSE = Param("purpose", "query", {"type": "string", "enum": list(PURPOSES)})


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
@operation(
    summary="Upload a file (multipart: `file`, `purpose`): a JSONL batch input (`batch`) or "
    "an image to ask about by `file_id` (`vision`, `user_data`).",
    tag="openai",
    answers={200: FileResponse},
    errors=(400, 413, 429),
    multipart=FILE_FORM,
    links=FILE_LINKS,
)
def upload_file() -> Response:
    """Store an uploaded file (`file` + `purpose`, optionally `expires_after`), streamed
    into chunks."""
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequestError("multipart upload needs a 'file'", param="file")
    purpose = request.form.get("purpose", "")
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequestError(
            f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", param="purpose"
        )
    rt = runtime()
    # The body's size bounds the file's: checked before a byte is stored.
    refuse_over_storage(rt, tenant_id(), request.content_length or 0)
    file = store_file(
        rt.sessions,
        tenant_id(),
        purpose,
        checked_filename(upload.filename),
        upload_chunks(upload.stream),
        expires_after_s=file_life_s(rt.settings, requested_life_s()),
    )
    count_stored(tenant_id(), file.bytes)
    return respond(FileResponse.of(file))


@bp.get("")
@operation(
    summary="The tenant's files, newest first.",
    tag="openai",
    answers={200: FileListResponse},
    errors=(400, 404),
    params=(PURPOSE, LIMIT, after("file")),
    operation_id="listFiles",
)
def list_files_page() -> Response:
    """The tenant's files, newest first (`?purpose=&limit=&after=`, as OpenAI pages them)."""
    with runtime().sessions() as session:
        page, has_more = list_files(
            session,
            tenant_id(),
            purpose=request.args.get("purpose"),
            limit=page_limit(),
            after=request.args.get("after"),
        )
        return respond(FileListResponse.of(page, has_more))


@bp.delete("/<file_id>")
@operation(
    summary="Delete a file (a 409 while an unfinished batch reads it).",
    tag="openai",
    answers={200: FileDeletedResponse},
    errors=(404, 409),
    operation_id="deleteFile",
)
def delete_file_by_id(file_id: str) -> Response:
    """Delete the file (a 409 while an unfinished batch reads it)."""
    with runtime().unit_of_work() as session:
        file = delete_file(session, tenant_id(), file_id)
        return respond(FileDeletedResponse.of(file))


@bp.get("/<file_id>")
@operation(
    summary="A file object.",
    tag="openai",
    answers={200: FileResponse},
    errors=(404,),
    operation_id="getFile",
)
def get_file_by_id(file_id: str) -> Response:
    """The file object."""
    with runtime().sessions() as session:
        return respond(FileResponse.of(get_file(session, tenant_id(), file_id)))


@bp.get("/<file_id>/content")
@operation(
    summary="A file's bytes.",
    tag="openai",
    answers={200: text("application/jsonl", "binary")},
    errors=(404,),
    operation_id="getFileContent",
)
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
