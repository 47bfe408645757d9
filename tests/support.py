"""Helpers shared by the integration and end-to-end tests: images, workers, waiting."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient
from PIL import Image, ImageDraw

from services.api.server import create_server, listening_socket
from services.core import outbound
from services.core.bootstrap import create_runtime
from services.core.config import Settings
from services.core.heartbeats import live_model_workers

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serving(app: Any, settings: Settings) -> Iterator[str]:
    """`app` served by the API's own server (services.api.server) on a free loopback port,
    from a thread of this process; yields its base URL."""
    sock = listening_socket("127.0.0.1", 0)
    server = create_server(app, settings, sock=sock)
    threading.Thread(target=server.run, name="vlmq-test-server", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.task_dispatcher.shutdown(timeout=5)
        server.close()


def shape_png(color: str = "red", shape: str = "circle", size: int = 64, fmt: str = "PNG") -> bytes:
    """An easy-VQA-style image: one coloured shape on white."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(size // 2, box[1]), (box[0], box[3]), (box[2], box[3])], fill=color)
    else:
        draw.rectangle(box, fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    """A base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def cli(settings: Settings, *args: str) -> str:
    """Run `vlmq <args>` in a process of its own against these settings; its output."""
    return subprocess.run(
        [sys.executable, "-m", "vlmq.cli", *args],
        cwd=REPO_ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a child process read the same settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLMQ_")}
    for name, value in settings.model_dump(mode="json").items():
        env[f"VLMQ_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env


class VlmqProcess:
    """A real `vlmq <command>` process in its own process group, logging to a file."""

    command = "worker"

    def __init__(self, settings: Settings, log_path: Path, *args: str, **extra_env: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vlmq.cli", self.command, *args],
            cwd=REPO_ROOT,
            env=settings_env(settings, **extra_env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test can kill it whole
        )

    def kill(self) -> None:
        """SIGKILL the whole process group at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop gracefully, or kill."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
                self.process.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
        self.log.close()


class ApiProcess(VlmqProcess):
    """A real `vlmq api` (two API processes unless `--workers` says otherwise)."""

    command = "api"


class WorkerProcess(VlmqProcess):
    """A real `vlmq worker` (the supervisor and the worker process it runs)."""

    command = "worker"

    def wait_ready(self, client: redis.Redis, timeout_s: float = 90) -> WorkerProcess:
        """Block until the worker's heartbeat says its model is loaded."""
        wait_until(
            lambda: any(
                info.get("pid") in self.pids()
                for info in live_model_workers(client, self.settings.model_id)
            ),
            timeout_s,
            f"worker ready (log: {self.log_path})",
        )
        return self

    def kill_worker(self, timeout_s: float = 60) -> int:
        """SIGKILL the worker process under the supervisor (which starts a new one, after a
        back-off if the last one died young); returns the pid killed."""

        def child() -> int | None:
            found = subprocess.run(
                ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            return int(found[0]) if found else None

        pid: int = wait_until(child, timeout_s, "the supervisor to run a worker", interval_s=0.1)
        os.kill(pid, 9)
        return pid

    def pids(self) -> set[int]:
        """The pids of the worker and its children."""
        children = subprocess.run(
            ["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return {self.process.pid, *(int(pid) for pid in children)}


def python_stdout(code: str) -> str:
    """What `python -c code` prints, run in a fresh process from the repository root (for
    what a process decides once: its imports, its thread pools)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05
) -> Any:
    """Poll `condition` until it is truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@contextlib.contextmanager
def model_stack(
    tmp: Path, database_url: str, redis_url: str, model: Path, **overrides: object
) -> Iterator[Settings]:
    """A stack's settings with a real `vlmq worker` serving `model` until the block ends (its
    log: `bundled_worker_log`)."""
    settings = make_settings(tmp, database_url, redis_url, model, **overrides)
    runtime = create_runtime(settings)
    worker = WorkerProcess(settings, bundled_worker_log(settings))
    try:
        worker.wait_ready(runtime.redis)
        yield settings
    finally:
        worker.stop()
        runtime.close()


def bundled_worker_log(settings: Settings) -> Path:
    """Where the worker of a `model_stack` writes its log."""
    return settings.data_dir / "worker.log"


def finished_batch(client: Any, batch_id: str, timeout_s: float = 120) -> Any:
    """The batch once it reached a terminal state, polled with the official client."""
    return wait_until(
        lambda: (
            (polled := client.batches.retrieve(batch_id)).status
            in ("completed", "failed", "cancelled", "expired")
            and polled
        ),
        timeout_s,
        f"batch {batch_id} to finish",
        interval_s=0.3,
    )


def make_settings(
    tmp: Path, database_url: str, redis_url: str, model: Path, **overrides: object
) -> Settings:
    """Settings for a test stack; nothing is read from the developer's environment or `.env`."""
    values: dict[str, object] = {
        "data_dir": tmp,
        "database_url": database_url,
        "redis_url": redis_url,
        "model": str(model),
        "served_model_name": "tiny-glm4v",
        "reconcile_interval_s": 1.0,
        "requeue_after_s": 30.0,
        "worker_heartbeat_s": 1.0,
        "outbound_allowlist": "127.0.0.1",
        # The suite sends far more than one tenant's default rate and queue cap; the tests
        # of rate limits and quotas turn them on.
        "rate_limit": "",
        "unauthenticated_rate_limit": "",
        "tenant_max_queued": 0,
    }
    values.update(overrides)
    clean = {key: value for key, value in os.environ.items() if key.startswith("VLMQ_")}
    for key in clean:
        os.environ.pop(key)
    try:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]
    finally:
        os.environ.update(clean)


def chat_batch_input(
    count: int, question: str = "what color is the shape?", tag: str = "c"
) -> bytes:
    """A batch input file of `count` chat lines about one small image (custom ids tag0...)."""
    content = [
        {"type": "image_url", "image_url": {"url": data_url(shape_png())}},
        {"type": "text", "text": question},
    ]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 2}
    lines = [
        {"custom_id": f"{tag}{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for n in range(count)
    ]
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()


def upload_batch_input(client: FlaskClient, auth: dict[str, str], raw: bytes) -> str:
    """Upload a batch input file through the API; returns its id."""
    response = client.post(
        "/v1/files",
        data={"purpose": "batch", "file": (io.BytesIO(raw), "input.jsonl")},
        headers=auth,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["id"])


@contextlib.contextmanager
def all_lookups_taken() -> Iterator[None]:
    """Every host name lookup of this process in use (by other tenants' hosts that hang)."""
    outbound.LOOKUPS.running["other-tenants"] += outbound.MAX_LOOKUPS
    try:
        yield
    finally:
        outbound.LOOKUPS.running["other-tenants"] -= outbound.MAX_LOOKUPS
        if outbound.LOOKUPS.running["other-tenants"] <= 0:
            del outbound.LOOKUPS.running["other-tenants"]
