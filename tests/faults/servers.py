"""Private Redis and PostgreSQL servers that a fault test may stop, flush and restart without
touching the machine's own (which the rest of the suite uses)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.support import free_port, wait_until


class PrivateRedis:
    """A `redis-server` of the test's own, keeping nothing on disk."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers."""
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed for the fault tests"
        self.process = subprocess.Popen(  # noqa: S603
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: _answers(client), 15, "the private Redis to start", interval_s=0.1)

    def flush_and_restart(self) -> None:
        """FLUSHALL, then stop and start again: a Redis that restarted empty."""
        redis.Redis(port=self.port).flushall()
        self.stop()
        self.start()

    def stop(self) -> None:
        """Kill the server (it keeps nothing)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def postgres_bin(name: str) -> str:
    """A PostgreSQL program of the machine's newest installed version."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"PostgreSQL's {name} is needed for the fault tests"
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb into a temporary folder, its own port),
    so stopping it disturbs nothing else."""

    def __init__(self) -> None:
        # A folder of its own that the `postgres` user can reach (pytest's are root-only).
        self.workdir = Path(tempfile.mkdtemp(prefix="vlmq-faults-pg-"))
        self.workdir.chmod(0o755)
        self.datadir = self.workdir / "pgdata"
        self.port = free_port()
        self.datadir.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.datadir, "postgres")
        self._run(
            postgres_bin("initdb"),
            "-D",
            str(self.datadir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute("CREATE DATABASE vlmq")

    @property
    def admin_url(self) -> str:
        """A libpq URL of its `postgres` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the `vlmq` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/vlmq"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True)  # noqa: S603

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            postgres_bin("pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.datadir / "server.log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop the server at once, as a crash would (`immediate` mode)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                postgres_bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"
            )

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def wait_stopped(self) -> None:
        """Block until nothing listens on its port."""

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return True
            return False

        wait_until(refused, 15, "the private PostgreSQL to stop", interval_s=0.1)
        time.sleep(0.1)
