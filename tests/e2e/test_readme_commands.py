"""What the README tells a new user to do: `vlmq up` (what `make run` runs), then ask it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, free_port, shape_png, wait_until


@pytest.fixture()
def vlmq_up(
    tmp_path: Path, tiny_model_dir: Path
) -> Iterator[tuple[str, str, dict[str, str], Path]]:
    """`vlmq up` on the embedded defaults (SQLite, embedded Redis), in a fresh data dir."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VLMQ_")}
    env.update(
        VLMQ_DATA_DIR=str(tmp_path / "var"),
        VLMQ_PORT=str(port),
        VLMQ_EMBEDDED_REDIS_PORT=str(free_port()),
        VLMQ_MODEL=str(tiny_model_dir),
    )
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "vlmq.cli", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            key = wait_until(
                lambda: (
                    (m := re.search(r"API key \(kept in [^)]*\): (\S+)", log.read_text()))
                    and m.group(1)
                ),
                60,
                "vlmq up to print a key",
                interval_s=0.2,
            )
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: ready(base), 90, f"readiness (log: {log})", interval_s=0.3)
            yield base, key, env, log
        finally:
            process.terminate()
            process.wait(timeout=30)


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_up_serves_the_curl_example_and_the_cli(
    vlmq_up: tuple[str, str, dict[str, str], Path],
) -> None:
    base, key, env, log = vlmq_up
    printed = log.read_text()
    assert f"curl -s {base}/v1/jobs" in printed
    # The curl example, as printed, with the image that ships in the repository.
    answer = subprocess.run(
        [
            "curl",
            "-s",
            f"{base}/v1/jobs",
            "-H",
            f"Authorization: Bearer {key}",
            "-H",
            "Prefer: wait=30",
            "-F",
            "image=@tests/data/red_circle.png",
            "-F",
            "question=what color is the shape?",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    job = json.loads(answer.stdout)
    assert job["status"] == "succeeded", job
    # `vlmq keys create` from the repository root uses the same database as `vlmq up`.
    created = subprocess.run(
        [sys.executable, "-m", "vlmq.cli", "keys", "create", "--tenant", "second"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    second_key = created.stdout.strip().splitlines()[-1]
    asked = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmq.cli",
            "ask",
            "tests/data/red_circle.png",
            "what color is the shape?",
            "--url",
            base,
        ],
        cwd=REPO_ROOT,
        env={**env, "VLMQ_API_KEY": second_key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() != ""


def test_bulk_moderation_pipeline_from_the_readme(
    vlmq_up: tuple[str, str, dict[str, str], Path], tmp_path: Path
) -> None:
    base, key, env, _log = vlmq_up
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, shape in [("a.png", "triangle"), ("b.png", "circle"), ("c.png", "rectangle")]:
        (photos / name).write_bytes(shape_png("red", shape))
    (photos / "notes.txt").write_text("not an image")
    cli = [sys.executable, "-m", "vlmq.cli", "batch"]
    env = {**env, "VLMQ_API_KEY": key}

    def run(*args: str) -> str:
        done = subprocess.run(
            [*cli, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = run(
        "moderation-file",
        str(photos),
        "--category",
        "triangle=is there a triangle?",
        "--out",
        "photos.jsonl",
    )
    assert "3 images" in made
    submitted = run(
        "submit", "photos.jsonl", "--wait", "--output", "photos.output.jsonl", "--url", base
    )
    assert "completed: 3 succeeded, 0 failed" in submitted
    lines = [
        json.loads(line) for line in (tmp_path / "photos.output.jsonl").read_text().splitlines()
    ]
    assert sorted(line["custom_id"] for line in lines) == ["a.png", "b.png", "c.png"]
    flagged = run("flagged", "photos.output.jsonl")
    expected = {
        line["custom_id"] for line in lines if line["response"]["body"]["results"][0]["flagged"]
    }
    assert {row.split("\t")[0] for row in flagged.splitlines()} == expected


def children_of(pid: int) -> dict[int, str]:
    """The child processes of `pid`, with their command lines."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = {}
    for child in (int(text) for text in found.stdout.split()):
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{child}/cmdline").read_bytes()
            children[child] = raw.replace(b"\0", b" ").decode()
    return children


def parent_of(pid: int) -> int:
    """The parent process of `pid`."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_up_restarts_its_embedded_redis_and_its_workers(
    vlmq_up: tuple[str, str, dict[str, str], Path],
) -> None:
    base, key, env, log = vlmq_up
    redis_port = env["VLMQ_EMBEDDED_REDIS_PORT"]
    found = subprocess.run(
        ["pgrep", "-f", f"redis-server.*:{redis_port}"], capture_output=True, text=True
    )
    redis_pid = int(found.stdout.split()[0])
    up_pid = parent_of(redis_pid)  # the supervisor of `vlmq up` started it
    doomed = {
        pid: command
        for pid, command in children_of(up_pid).items()
        if "redis-server" in command or "background-worker" in command
    }
    assert len(doomed) == 2, children_of(up_pid)
    for pid in doomed:
        os.kill(pid, 9)

    def replaced() -> bool:
        commands = [c for pid, c in children_of(up_pid).items() if pid not in doomed]
        return any("redis-server" in c for c in commands) and any(
            "background-worker" in c for c in commands
        )

    wait_until(replaced, 30, f"new children (log: {log})", interval_s=0.2)
    wait_until(lambda: ready(base), 90, f"readiness again (log: {log})", interval_s=0.3)
    # The supervisor logs a restart once the new child answers, which may be a moment
    # after the API is ready again.
    wait_until(
        lambda: all(
            f"event=child_restarted name={name}" in log.read_text()
            for name in ("redis", "background-worker")
        ),
        30,
        f"both restarts logged (log: {log})",
        interval_s=0.2,
    )
    image = shape_png("red", "circle")
    request = urllib.request.Request(
        f"{base}/v1/jobs",
        data=json.dumps(
            {
                "image": "data:image/png;base64," + base64.b64encode(image).decode(),
                "question": "what color is the shape?",
            }
        ).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Prefer": "wait=30",
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert json.load(response)["status"] == "succeeded"
