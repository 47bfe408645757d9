"""The cache key: one function, sensitive to everything that changes the answer."""

from __future__ import annotations

from services.core.cache import cache_key, is_cacheable
from services.core.inputs.prompts import GenerationParams


def key(**changes: object) -> str:
    values: dict[str, object] = {
        "model_revision": "rev1",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "sha256": "a" * 64}, {"type": "text", "text": "q"}],
            }
        ],
        "params": GenerationParams(),
        "tenant_id": "ten_1",
    }
    values.update(changes)
    return cache_key(**values)  # type: ignore[arg-type]


def test_key_is_stable() -> None:
    assert key() == key()


def test_key_changes_with_each_input() -> None:
    other_image = [
        {
            "role": "user",
            "content": [{"type": "image", "sha256": "b" * 64}, {"type": "text", "text": "q"}],
        }
    ]
    other_question = [
        {
            "role": "user",
            "content": [{"type": "image", "sha256": "a" * 64}, {"type": "text", "text": "r"}],
        }
    ]
    variants = {
        key(model_revision="rev2"),
        key(messages=other_image),
        key(messages=other_question),
        key(params=GenerationParams(max_tokens=5)),
        key(tenant_id="ten_2"),
        key(tenant_id=None),
    }
    assert key() not in variants and len(variants) == 6


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_cacheable(GenerationParams())
    assert is_cacheable(GenerationParams(temperature=0.5, seed=3))
    assert not is_cacheable(GenerationParams(temperature=0.5))
