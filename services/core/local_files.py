"""The files the embedded defaults keep under `data_dir`: private to the service's user.

`vlmq up` keeps its SQLite database, the embedded Redis's append-only file, its API key,
the Redis password, the secret key and the metrics files there. Every `vlmq` command sets
the umask so that what it writes is its owner's alone (folders 0700, files 0600), and
`private_data_dir` tightens what an older version left readable to others, saying so.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Files created by any `vlmq` command: rw for the owner, nothing for anyone else.
PRIVATE_UMASK = 0o077
# The embedded Redis's password, beside its data.
REDIS_PASSWORD_FILE = Path("redis") / "password"
# The key that encrypts secrets at rest when `VLMQ_SECRET_KEY` is not set.
SECRET_KEY_FILE = "secret-key"  # noqa: S105 (a file name)


def set_private_umask() -> None:
    """Make what this process creates readable by its owner only."""
    os.umask(PRIVATE_UMASK)


def private_data_dir(data_dir: Path) -> list[Path]:
    """Create `data_dir` (0700) and take group and other access off everything in it that
    still has some (a warning names them); the paths fixed."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    loose = [
        path
        for path in [data_dir, *data_dir.rglob("*")]
        if not path.is_symlink() and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    for path in loose:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~(stat.S_IRWXG | stat.S_IRWXO))
    if loose:
        log.warning(
            "loose_files_fixed",
            data_dir=str(data_dir),
            count=len(loose),
            paths=[str(path) for path in loose[:10]],
        )
    return loose


def read_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """The secret kept in `path`, made (random, URL-safe, file mode 0600) if there is none.
    Two processes starting at once agree: only one creates the file, the other reads it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)
    value = secrets.token_urlsafe(nbytes)
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    return value


def read_secret(path: Path) -> str:
    """The secret kept in `path` (waiting briefly for a writer that just created it)."""
    for _ in range(50):
        value = path.read_text().strip()
        if value:
            return value
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: delete it to have a new secret made")
