"""Fixtures on real parts: a real Redis, SQLite and PostgreSQL databases, real worker processes.

Every integration test runs once per database backend (the `backend` fixture's params).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from services.api import create_app
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.migrate import upgrade
from services.core.runtime import Runtime
from tests.fake_stack import fake_stack_fixture
from tests.support import WorkerProcess, make_settings, serving
from tests.webhook_receiver import BackgroundWorkerProcess, WebhookReceiver
from vlmq.cli import create_key
from workers.models.glm4v_builder import Glm4vRecipe, build_glm4v

REDIS_URL = os.environ.get("VLMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get(
    "VLMQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
# The Redis database of each stack of the suite, none shared: the two backends' session
# stacks live through the whole run, beside every other stack, and a stack flushes its
# database when it starts.
REDIS_DB = {
    "sqlite": 11,
    "postgresql": 12,
    "fairness": 8,
    "observability": 9,
    "api_server": 10,
    "faults": 13,
    "batch_chunks": 14,
}


def redis_db_url(stack: str) -> str:
    """The URL of the Redis database of one of the suite's stacks (see `REDIS_DB`)."""
    return f"{REDIS_URL}/{REDIS_DB[stack]}"


TINY_WORDS = [
    *["what", "color", "is", "the", "shape", "in", "image", "does", "contain", "a", "not"],
    *["there", "circle", "rectangle", "triangle", "red", "green", "blue", "yes", "no"],
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight GLM-4V checkpoint built on the spot (well under a second of work),
    with a vocabulary that spells anything, so structured output can constrain it."""
    recipe = Glm4vRecipe(words=TINY_WORDS, seed=0, spells=True)
    return build_glm4v(recipe, tmp_path_factory.mktemp("tiny-glm4v"))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this run of the integration suite."""
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated database of the backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'vlmq.db'}"
        upgrade(url)
        yield url
        return
    name = f"vlmq_test_{secrets.token_hex(4)}"
    admin = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_URL}/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url(backend: str) -> str:
    """An emptied Redis database for the backend's stack."""
    url = redis_db_url(backend)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def settings(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    redis_url: str,
    tiny_model_dir: Path,
) -> Settings:
    """The settings of the backend's main stack (tiny GLM-4V, real worker)."""
    return make_settings(tmp_path_factory.mktemp("var"), database_url, redis_url, tiny_model_dir)


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Iterator[Runtime]:
    """Connections to the stack's database and Redis."""
    rt = create_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def worker(
    settings: Settings, runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real `vlmq worker` process serving the tiny model."""
    process = WorkerProcess(settings, tmp_path_factory.mktemp("logs") / "worker.log")
    try:
        yield process.wait_ready(runtime.redis)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def background_worker(
    settings: Settings, runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackgroundWorkerProcess]:
    """A real `vlmq background-worker` process (no model) with a short retry schedule."""
    process = BackgroundWorkerProcess(settings, tmp_path_factory.mktemp("logs") / "webhooks.log")
    try:
        yield process.wait_ready(runtime.redis)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def app(settings: Settings) -> Flask:
    """The API app of the stack."""
    return create_app(settings)


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    """A test client of the API."""
    return app.test_client()


@pytest.fixture(scope="session")
def api_key(settings: Settings) -> str:
    """A key of the tenant `acme`."""
    return create_key(settings, "acme", "tests")


@pytest.fixture(scope="session")
def other_api_key(settings: Settings) -> str:
    """A key of another tenant, `globex`."""
    return create_key(settings, "globex", "tests")


@pytest.fixture(scope="session")
def auth(api_key: str) -> dict[str, str]:
    """Authorization header of `acme`."""
    return {"Authorization": f"Bearer {api_key}"}


fake_stack = pytest.fixture(fake_stack_fixture, name="fake_stack")


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    """A fresh loopback webhook receiver for the test."""
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="session")
def live_server(app: Flask, settings: Settings) -> Iterator[str]:
    """The API on a real HTTP port on loopback, served as `vlmq up` serves it; yields its
    base URL."""
    with serving(app, settings) as url:
        yield url


# Every test under these directories is slow: the fault suite kills and restarts real
# processes, the fuzz suite replays hundreds of cases per endpoint, and the fairness suite
# floods a real worker.
SLOW_DIRECTORIES = [Path(__file__).parent / name for name in ("faults", "fuzz", "fairness")]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of the slow directories `slow` (`make test-fast` leaves them out), and
    run the tests marked `one_database` on SQLite only."""
    kept, deselected = [], []
    for item in items:
        if any(item.path.is_relative_to(directory) for directory in SLOW_DIRECTORIES):
            item.add_marker(pytest.mark.slow)
        params = getattr(item, "callspec", None)
        on_postgresql = params is not None and params.params.get("backend") == "postgresql"
        if on_postgresql and item.get_closest_marker("one_database"):
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures the fault tests measured, one line per test."""
    from tests.faults.stack import FIGURES

    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
