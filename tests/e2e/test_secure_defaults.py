"""Secure by default, on a real `vlmq up` (embedded Redis, SQLite, one worker, the API) in
a data folder of its own: what another local user could read or reach, and what the public
port shows."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from services.core.config import Settings
from tests.support import VlmqProcess, free_port, make_settings, wait_until


class UpProcess(VlmqProcess):
    """A real `vlmq up`."""

    command = "up"


@dataclass
class Up:
    settings: Settings
    data_dir: Path
    base: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("up")
    data_dir = tmp / "var"
    # What an older version left: a data folder and a file anyone could read.
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "stale.log").write_text("old lines\n")
    (data_dir / "stale.log").chmod(0o644)
    port = free_port()
    settings = make_settings(
        data_dir,
        "",
        "",
        tiny_model_dir,
        host="127.0.0.1",
        port=port,
        embedded_redis_port=free_port(),
        metrics_dir="",
    )
    log = tmp / "up.log"
    process = UpProcess(settings, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(base), 120, f"vlmq up (log: {log})", 0.3)
        yield Up(settings, data_dir, base, log)
    finally:
        process.stop()


def healthy(base: str) -> bool:
    try:
        return get(f"{base}/healthz")[0] == 200
    except OSError:
        return False


def test_the_embedded_redis_wants_its_password_and_refuses_admin_commands(up: Up) -> None:
    port = up.settings.embedded_redis_port
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, password="guess").ping()  # noqa: S106 (a wrong password)
    password_file = up.data_dir / "redis" / "password"
    client = redis.Redis(port=port, password=password_file.read_text().strip())
    assert client.ping()
    for command in (("CONFIG", "GET", "dir"), ("MODULE", "LIST"), ("DEBUG", "SLEEP", "0")):
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command(*command)
    # The banner says which Redis runs; the machine's is preferred when it is 7 or later.
    assert "embedded Redis " in up.log_text()
    # The password is neither on a command line nor in the log.
    assert password_file.read_text().strip() not in up.log_text()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            assert password_file.read_text().strip().encode() not in cmdline


def auth(up: Up) -> dict[str, str]:
    return {"Authorization": f"Bearer {(up.data_dir / 'api-key').read_text().strip()}"}


def test_webhook_secrets_are_not_in_the_database_file_in_the_clear(up: Up) -> None:
    status, _, body = get(f"{up.base}/v1/webhooks/default/secret", auth(up))
    assert status == 200
    secret = json.loads(body)["key"]
    stored = b"".join(path.read_bytes() for path in up.data_dir.glob("vlmq.db*") if path.is_file())
    assert secret.encode() not in stored
    assert secret.removeprefix("whsec_").encode() not in stored
    assert b"enc:v1:" in stored


def test_every_file_in_the_data_folder_is_its_owners_alone(up: Up) -> None:
    # Requests, so that every kind of file exists: database rows, the secret key, metrics.
    assert get(f"{up.base}/v1/jobs", auth(up))[0] == 200
    assert get(f"{up.base}/v1/webhooks/default/secret", auth(up))[0] == 200
    assert stat.S_IMODE(up.data_dir.stat().st_mode) == 0o700
    found = {path.relative_to(up.data_dir).as_posix(): path for path in up.data_dir.rglob("*")}
    kept = ("vlmq.db", "api-key", "secret-key", "redis/password", "redis/redis.conf", "stale.log")
    for name in kept:
        assert name in found, sorted(found)
    assert any(name.startswith("metrics/") for name in found), sorted(found)
    assert any("appendonly" in name for name in found), sorted(found)
    loose = {
        name: oct(stat.S_IMODE(path.stat().st_mode))
        for name, path in found.items()
        if path.stat().st_mode & 0o077
    }
    assert loose == {}
    assert "loose_files_fixed" in up.log_text()


def test_the_public_port_shows_nothing_internal(up: Up) -> None:
    # /metrics answers this host (Prometheus beside `vlmq up`), naming tenants by hash only.
    status, _, body = get(f"{up.base}/metrics")
    assert status == 200 and b"vlmq_http_requests_total" in body
    assert b'tenant="ten_' not in body
    # /readyz: ready or not, and which check; no hosts, ports or paths.
    wait_until(lambda: get(f"{up.base}/readyz")[0] == 200, 60, "a ready stack")
    status, _, body = get(f"{up.base}/readyz")
    assert b"127.0.0.1" not in body and str(up.data_dir).encode() not in body
    # /v1/models names checkpoints, never where they lie on the server.
    status, _, body = get(f"{up.base}/v1/models", auth(up))
    assert status == 200 and str(up.settings.model).encode() not in body
    # The playground: its policy, and no sniffing or referrers.
    status, headers, _ = get(f"{up.base}/")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
