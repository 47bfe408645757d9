"""Pick the backend named by `VLMQ_BACKEND`: `transformers`, or `package.module:ClassName`."""

from __future__ import annotations

import importlib

from services.core.config import Settings
from workers.backends.base import VLMBackend


def create_backend(settings: Settings) -> VLMBackend:
    """A backend instance for the configured model (weights are not loaded yet)."""
    if settings.backend == "transformers":
        from workers.backends.transformers_vlm import TransformersVLM

        return TransformersVLM(
            settings.model, batching=settings.batching, adapters=settings.adapters
        )
    module_name, _, class_name = settings.backend.partition(":")
    if not class_name:
        raise ValueError(
            f"VLMQ_BACKEND must be 'transformers' or 'module:Class', got {settings.backend!r}"
        )
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: VLMBackend = backend_class(settings.model)
    return backend
