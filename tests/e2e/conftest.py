"""What the end-to-end tests share: a headless Chromium for the playground's tests, and
the bundled model's own stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from services.api import create_app
from services.core.config import BUNDLED_MODEL_DIR, Settings
from tests.support import model_stack, serving

CHROMIUM = Path("/usr/bin/chromium")
# The flags that keep Chromium off the network here (it would try Google's hosts at start).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium package is needed (`.ci/run` installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


# One per database for all the modules that use it (each start loads the model: seconds).
@pytest.fixture(scope="package")
def bundled(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str
) -> Iterator[tuple[str, Settings]]:
    """The bundled model's own stack (a real worker, the API on a real port, the suite's
    database and Redis) with default settings, for the end-to-end tests: its URL and
    settings."""
    tmp = tmp_path_factory.mktemp("bundled")
    with (
        model_stack(
            tmp, database_url, redis_url, BUNDLED_MODEL_DIR, served_model_name=""
        ) as settings,
        serving(create_app(settings), settings) as url,
    ):
        yield url, settings
