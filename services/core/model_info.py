"""What the API knows about the served model without loading it (no torch here)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from services.core.config import Settings
from services.core.errors import NotFoundError

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


def served_model(requested: str | None, settings: Settings) -> str:
    """The model a request's `model` names: the base model when it names none, or one of
    the LoRA adapters served beside it; any other name is a 404 (as in the OpenAI API)."""
    if not requested:
        return settings.model_id
    if requested not in settings.served_models:
        raise NotFoundError(
            f"the model {requested!r} does not exist", code="model_not_found", param="model"
        )
    return requested


def served_revision(settings: Settings, model_id: str) -> str:
    """The fingerprint of what answers for `model_id`: the base model's, and the adapter's
    for an adapter (so adapter and base answers never share a cache entry)."""
    base = model_revision(settings.model)
    adapter = settings.adapters.get(model_id)
    return base if adapter is None else f"{base}+{model_revision(adapter)}"


@dataclass(frozen=True)
class ServedModel:
    """A model this deployment answers with: the base model or a LoRA adapter beside it."""

    id: str
    # The checkpoint or adapter path, as vLLM's `root`.
    root: str
    parent: str | None
    revision: str
    created: int


def served_models(settings: Settings) -> list[ServedModel]:
    """The base model, then each LoRA adapter with its `parent`."""
    models = [served(settings.model_id, settings.model, None, model_revision(settings.model))]
    for name, path in settings.adapters.items():
        models.append(served(name, path, settings.model_id, served_revision(settings, name)))
    return models


def served(model_id: str, root: str, parent: str | None, revision: str) -> ServedModel:
    """One served model (`created`: its files' time, 0 for a hub id)."""
    path = Path(root)
    created = int(path.stat().st_mtime) if path.exists() else 0
    return ServedModel(model_id, root, parent, revision, created)
