"""What the API knows about the served model without loading it (no torch here)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from services.core.config import Settings

SAMPLE_BYTES = 1 << 20


@lru_cache(maxsize=8)
def model_revision(model: str) -> str:
    """A short fingerprint of the model, part of every cache key.

    For a local directory: its config and a sample of each weight file (start, end, size),
    so retrained weights change it without reading gigabytes. For a hub id: the id.
    """
    path = Path(model)
    if not path.is_dir():
        return hashlib.sha256(model.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.suffix in (".json", ".jinja") and file.is_file():
            digest.update(file.name.encode() + file.read_bytes())
        elif file.suffix in (".safetensors", ".bin") and file.is_file():
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}".encode())
            with file.open("rb") as handle:
                digest.update(handle.read(SAMPLE_BYTES))
                handle.seek(max(0, size - SAMPLE_BYTES))
                digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def model_card(settings: Settings) -> dict[str, object]:
    """The served model as `GET /v1/models` lists it (`root` is the checkpoint path, as in vLLM)."""
    path = Path(settings.model)
    created = int(path.stat().st_mtime) if path.exists() else 0
    return {
        "id": settings.model_id,
        "object": "model",
        "created": created,
        "owned_by": "vlmq",
        "root": settings.model,
        "parent": None,
        "revision": model_revision(settings.model),
    }
