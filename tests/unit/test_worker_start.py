"""A model worker starts without torch and transformers until its backend needs them: their
imports take seconds, and a worker whose backend needs neither (or one restarted after a
crash, before its model loads) should not wait for them."""

from __future__ import annotations

import subprocess
import sys

from services.core.config import REPO_ROOT


def test_the_worker_and_background_worker_import_neither_torch_nor_transformers() -> None:
    check = (
        "import sys, workers.consumer, workers.background, services.api; "
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "[]"
