"""Files (OpenAI Files shape), stored in the database in chunks.

Chunks let a 10,000-line batch file be written and read a piece at a time, on SQLite and
PostgreSQL alike, without a shared disk between the API and the workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import IO

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from services.core.config import Settings
from services.core.db import session_scope, utcnow
from services.core.errors import ConflictError, InvalidRequestError, NotFoundError
from services.core.ids import new_id
from services.core.pagination import newest_first_page
from services.core.tables import Batch, BatchStatus, File, FileChunk
from services.core.tenancy import get_owned

CHUNK_BYTES = 1 << 20
# What a client may upload a file for: a batch's input lines, or an image to ask about by
# `file_id` (`vision`, and OpenAI's general `user_data`).
UPLOAD_PURPOSES = ("batch", "vision", "user_data")
IMAGE_PURPOSES = ("vision", "user_data")
PURPOSES = (*UPLOAD_PURPOSES, "batch_output")
# The lives a client may give a file (`expires_after`, `output_expires_after`), as OpenAI
# allows: one hour to 30 days, counted from the file's creation.
EXPIRES_AFTER_S = (3600, 30 * 86400)


def get_file(session: Session, tenant_id: str, file_id: str) -> File:
    """The tenant's file, or a 404 (also for a file past its `expires_at`, which the
    pruning pass deletes soon)."""
    file = get_owned(session, File, tenant_id, file_id, noun="file", param="file_id")
    if file.expires_at is not None and file.expires_at <= utcnow():
        raise NotFoundError(f"no file {file_id!r}", param="file_id")
    return file


def list_files(
    session: Session, tenant_id: str, *, purpose: str | None, limit: int, after: str | None
) -> tuple[list[File], bool]:
    """A page of the tenant's live files (of one `purpose`, if given), newest first."""
    if purpose is not None and purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    now = utcnow()
    query = sa.select(File).where(
        File.tenant_id == tenant_id, sa.or_(File.expires_at.is_(None), File.expires_at > now)
    )
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    cursor = get_file(session, tenant_id, after) if after is not None else None
    return newest_first_page(session, File, query, cursor, limit)


def delete_file(session: Session, tenant_id: str, file_id: str) -> File:
    """Delete a file: it is gone for the client at once (404), and the pruning pass frees
    its chunks. A 409 while an unfinished batch reads it as input."""
    file = get_file(session, tenant_id, file_id)
    user = session.scalar(
        sa.select(Batch.id).where(
            Batch.input_file_id == file_id,
            Batch.status.not_in([status.value for status in BatchStatus if status.is_terminal()]),
        )
    )
    if user is not None:
        raise ConflictError(
            f"file {file_id} is the input of batch {user}, which has not finished; cancel the "
            "batch or wait for it to end",
            code="file_in_use",
            param="file_id",
        )
    file.expires_at = utcnow()
    return file


def check_expires_after(anchor: str | None, seconds: int | None, param: str) -> int:
    """The seconds of an OpenAI expiration policy (`{anchor: "created_at", seconds}`), or a
    400 naming the bad part of `param`."""
    if anchor != "created_at":
        raise InvalidRequestError("the anchor must be 'created_at'", param=f"{param}[anchor]")
    low, high = EXPIRES_AFTER_S
    if seconds is None or not low <= seconds <= high:
        raise InvalidRequestError(
            f"seconds must be an integer from {low} to {high}", param=f"{param}[seconds]"
        )
    return seconds


def file_life_s(settings: Settings, requested_s: int | None) -> int | None:
    """How long a new file lives: what the client asked for, else the deployment's file
    retention (None: for ever)."""
    return requested_s or settings.file_retention_s or None


def store_file(
    sessions: sessionmaker[Session],
    tenant_id: str,
    purpose: str,
    filename: str,
    pieces: Iterable[bytes],
    *,
    expires_after_s: int | None = None,
) -> File:
    """Store a file from a stream of byte pieces, one chunk row at a time; it expires
    `expires_after_s` after its creation (never, if None or 0)."""
    if purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    # OpenAI spells file ids "file-...".
    file_id = "file-" + new_id("f").removeprefix("f_")
    now = utcnow()
    file = File(
        id=file_id,
        tenant_id=tenant_id,
        purpose=purpose,
        filename=filename,
        bytes=0,
        created_at=now,
        expires_at=now + timedelta(seconds=expires_after_s) if expires_after_s else None,
    )
    with session_scope(sessions) as session:
        session.add(file)
        # A bytearray grows in place: adding small pieces (a result file's lines) to a
        # `bytes` copies the whole buffer each time, quadratic in the chunk's size.
        buffer = bytearray()
        seq = 0
        for piece in pieces:
            buffer += piece
            while len(buffer) >= CHUNK_BYTES:
                chunk = bytes(buffer[:CHUNK_BYTES])
                del buffer[:CHUNK_BYTES]
                session.add(FileChunk(file_id=file.id, seq=seq, data=chunk))
                session.flush()
                file.bytes += CHUNK_BYTES
                seq += 1
        if buffer:
            session.add(FileChunk(file_id=file.id, seq=seq, data=bytes(buffer)))
            file.bytes += len(buffer)
    return file


def file_image(session: Session, tenant_id: str, file_id: str, max_bytes: int) -> bytes:
    """The bytes of the tenant's image file (`purpose` vision or user_data), or a 404 for a
    file it does not own, a 400 for one of another purpose or over `max_bytes`."""
    file = get_file(session, tenant_id, file_id)
    if file.purpose not in IMAGE_PURPOSES:
        raise InvalidRequestError(
            f"file {file_id!r} is not an image file (purpose vision or user_data)",
            param="file_id",
        )
    if file.bytes > max_bytes:
        raise InvalidRequestError(
            f"file {file_id!r} is over the image size limit of {max_bytes} bytes",
            param="file_id",
        )
    chunks = session.scalars(
        sa.select(FileChunk.data).where(FileChunk.file_id == file.id).order_by(FileChunk.seq)
    )
    return b"".join(chunks)


def upload_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """Pieces of an uploaded stream."""
    while piece := stream.read(CHUNK_BYTES):
        yield piece


def file_chunks(sessions: sessionmaker[Session], file_id: str) -> Iterator[bytes]:
    """The file's bytes, a chunk at a time (one short query per chunk)."""
    seq = 0
    while True:
        with sessions() as session:
            data = session.scalar(
                sa.select(FileChunk.data).where(FileChunk.file_id == file_id, FileChunk.seq == seq)
            )
        if data is None:
            return
        yield data
        seq += 1


def file_lines(sessions: sessionmaker[Session], file_id: str) -> Iterator[bytes]:
    """The file's lines (without line ends), reading a chunk at a time."""
    rest = b""
    for chunk in file_chunks(sessions, file_id):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest
