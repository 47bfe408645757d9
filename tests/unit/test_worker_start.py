"""A model worker starts without torch and transformers until its backend needs them: their
imports take seconds, and a worker whose backend needs neither (or one restarted after a
crash, before its model loads) should not wait for them."""

from __future__ import annotations

from tests.support import python_stdout


def test_the_worker_and_background_worker_import_neither_torch_nor_transformers() -> None:
    check = (
        "import sys, workers.consumer, workers.background, services.api; "
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))"
    )
    assert python_stdout(check).strip() == "[]"
