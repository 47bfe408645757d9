"""Files are stored in chunk rows: what goes in comes out, whatever the pieces' sizes."""

from __future__ import annotations

import secrets

from services.core.auth import get_or_create_tenant
from services.core.files import CHUNK_BYTES, file_chunks, file_lines, store_file
from services.core.runtime import Runtime


def test_a_file_of_many_small_pieces_comes_back_whole_across_its_chunks(runtime: Runtime) -> None:
    # A result file is written a line at a time: thousands of pieces of a few hundred bytes,
    # crossing two chunk boundaries.
    with runtime.unit_of_work() as session:
        tenant_id = get_or_create_tenant(session, "files").id
    lines = [secrets.token_hex(150).encode() + b"\n" for _ in range(9_000)]
    content = b"".join(lines)
    assert 2 * CHUNK_BYTES < len(content) < 3 * CHUNK_BYTES
    stored = store_file(runtime.sessions, tenant_id, "batch_output", "out.jsonl", iter(lines))
    assert stored.bytes == len(content)
    chunks = list(file_chunks(runtime.sessions, stored.id))
    assert [len(chunk) for chunk in chunks] == [
        CHUNK_BYTES,
        CHUNK_BYTES,
        len(content) % CHUNK_BYTES,
    ]
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    assert b"".join(chunks) == content
    assert list(file_lines(runtime.sessions, stored.id)) == [line[:-1] for line in lines]
