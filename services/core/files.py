"""Files (OpenAI Files shape), stored in the database in chunks.

Chunks let a 10,000-line batch file be written and read a piece at a time, on SQLite and
PostgreSQL alike, without a shared disk between the API and the workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.core.db import session_scope
from services.core.errors import InvalidRequestError, NotFoundError
from services.core.ids import new_id
from services.core.models import File, FileChunk
from services.core.runtime import Runtime

CHUNK_BYTES = 1 << 20
PURPOSES = ("batch", "batch_output")


def get_file(session: Session, tenant_id: str, file_id: str) -> File:
    """The tenant's file, or a 404."""
    file = session.get(File, file_id)
    if file is None or file.tenant_id != tenant_id:
        raise NotFoundError(f"no file {file_id!r}", param="file_id")
    return file


def store_file(
    runtime: Runtime, tenant_id: str, purpose: str, filename: str, pieces: Iterable[bytes]
) -> File:
    """Store a file from a stream of byte pieces, one chunk row at a time."""
    if purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    # OpenAI spells file ids "file-...".
    file_id = "file-" + new_id("f").removeprefix("f_")
    file = File(id=file_id, tenant_id=tenant_id, purpose=purpose, filename=filename, bytes=0)
    with session_scope(runtime.sessions) as session:
        session.add(file)
        buffer = b""
        seq = 0
        for piece in pieces:
            buffer += piece
            while len(buffer) >= CHUNK_BYTES:
                session.add(FileChunk(file_id=file.id, seq=seq, data=buffer[:CHUNK_BYTES]))
                session.flush()
                file.bytes += CHUNK_BYTES
                buffer, seq = buffer[CHUNK_BYTES:], seq + 1
        if buffer:
            session.add(FileChunk(file_id=file.id, seq=seq, data=buffer))
            file.bytes += len(buffer)
    return file


def read_stream(stream: IO[bytes]) -> Iterator[bytes]:
    """Pieces of an uploaded stream."""
    while piece := stream.read(CHUNK_BYTES):
        yield piece


def file_chunks(runtime: Runtime, file_id: str) -> Iterator[bytes]:
    """The file's bytes, a chunk at a time (one short query per chunk)."""
    seq = 0
    while True:
        with runtime.sessions() as session:
            data = session.scalar(
                sa.select(FileChunk.data).where(FileChunk.file_id == file_id, FileChunk.seq == seq)
            )
        if data is None:
            return
        yield data
        seq += 1


def file_lines(runtime: Runtime, file_id: str) -> Iterator[bytes]:
    """The file's lines (without line ends), reading a chunk at a time."""
    rest = b""
    for chunk in file_chunks(runtime, file_id):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest


def file_response(file: File) -> dict[str, Any]:
    """The OpenAI file object."""
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": int(file.created_at.timestamp()),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
    }
