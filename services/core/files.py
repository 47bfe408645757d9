"""Files (OpenAI Files shape), stored in the database in chunks.

Chunks let a 10,000-line batch file be written and read a piece at a time, on SQLite and
PostgreSQL alike, without a shared disk between the API and the workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from services.core.db import session_scope
from services.core.errors import InvalidRequestError
from services.core.ids import new_id
from services.core.models import File, FileChunk
from services.core.tenancy import get_owned

CHUNK_BYTES = 1 << 20
PURPOSES = ("batch", "batch_output")


def get_file(session: Session, tenant_id: str, file_id: str) -> File:
    """The tenant's file, or a 404."""
    return get_owned(session, File, tenant_id, file_id, noun="file", param="file_id")


def store_file(
    sessions: sessionmaker[Session],
    tenant_id: str,
    purpose: str,
    filename: str,
    pieces: Iterable[bytes],
) -> File:
    """Store a file from a stream of byte pieces, one chunk row at a time."""
    if purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    # OpenAI spells file ids "file-...".
    file_id = "file-" + new_id("f").removeprefix("f_")
    file = File(id=file_id, tenant_id=tenant_id, purpose=purpose, filename=filename, bytes=0)
    with session_scope(sessions) as session:
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
