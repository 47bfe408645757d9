"""Key management: `vlmq keys list` shows keys but never a key, `vlmq keys revoke` refuses a
key at once in every API process, and `vlmq up` keeps the key it made instead of minting one
at every start."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import (
    ApiProcess,
    cli,
    free_port,
    make_settings,
    wait_until,
)
from vlmq.cli import LOCAL_KEY_FILE, create_key, local_key


def status_of(base: str, key: str) -> int:
    request = urllib.request.Request(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def test_a_revoked_key_is_refused_at_once_by_every_api_process(
    tmp_path: Path, database_url: str, redis_url: str, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, database_url, redis_url, tiny_model_dir)
    key = create_key(settings, "revoke-tenant", "to revoke")
    kept = create_key(settings, "revoke-tenant", "to keep")
    servers = []
    try:
        for n in range(2):
            port = free_port()
            env = {"VLMQ_PORT": str(port), "VLMQ_HOST": "127.0.0.1"}
            servers.append((ApiProcess(settings, tmp_path / f"api-{n}.log", **env), port))
        bases = [f"http://127.0.0.1:{port}" for _, port in servers]
        for base in bases:
            wait_until(lambda b=base: status_of(b, key) == 200, 60, f"api {base}")
        listing = cli(settings, "keys", "list", "--tenant", "revoke-tenant")
        assert "to revoke" in listing and "to keep" in listing
        assert key not in listing and kept not in listing
        line = next(row for row in listing.splitlines() if "to revoke" in row)
        [key_id] = re.findall(r"key_\w+", line)
        assert key_id.startswith("key_")
        assert "revoked key_" in cli(settings, "keys", "revoke", key_id)
        # Every request, to any of the four gunicorn processes, is refused at once.
        for base in bases:
            assert [status_of(base, key) for _ in range(8)] == [401] * 8
            assert status_of(base, kept) == 200
        listing = cli(settings, "keys", "list", "--tenant", "revoke-tenant")
        revoked_line = next(line for line in listing.splitlines() if "to revoke" in line)
        # Created, last used and revoked are all shown.
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", revoked_line)) == 3, revoked_line
        # The key itself works as a name too.
        assert "revoked key_" in cli(settings, "keys", "revoke", kept)
        assert status_of(bases[0], kept) == 401
    finally:
        for server, _ in servers:
            server.stop()


def test_vlmq_up_keeps_its_key_until_it_is_revoked(
    tmp_path: Path, database_url: str, redis_url: str, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, database_url, redis_url, tiny_model_dir)
    first = local_key(settings)
    assert local_key(settings) == first
    path = tmp_path / LOCAL_KEY_FILE
    assert path.stat().st_mode & 0o077 == 0  # readable by its owner only
    cli(settings, "keys", "revoke", first)
    second = local_key(settings)
    assert second != first and path.read_text().strip() == second
