"""The `vlmq` command: servers, workers, migrations, keys, batches, and a client."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog

from services.core.config import Settings
from services.core.local_files import (
    REDIS_PASSWORD_FILE,
    private_data_dir,
    read_or_create_secret,
    set_private_umask,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Where `vlmq up` keeps the key it made, in its data folder (readable by its owner only).
LOCAL_KEY_FILE = "api-key"


@click.group()
def main() -> None:
    """vlmq: a job queue for vision-language models."""
    # What any command writes (databases, keys, metrics, the embedded Redis's files) is
    # its owner's alone.
    set_private_umask()


def share_metrics(settings: Settings, *, fresh: bool = False) -> None:
    """Have this process (and the processes it starts) write its metrics into the host's
    metrics folder, which `/metrics` adds up (see services.core.metrics); `fresh` empties it
    first. Called before anything imports prometheus-client, which reads the folder's name
    once, at import."""
    folder = settings.metrics_path
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from services.core.migrate import upgrade

    settings = Settings()
    upgrade(settings.sqlalchemy_url)
    click.echo(f"database is at the newest schema ({settings.sqlalchemy_url})")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to (created if new).")
@click.option("--label", default=None, help="A note to tell keys apart.")
def keys_create(tenant: str, label: str | None) -> None:
    """Create an API key; it is printed once, as the last line."""
    click.echo(create_key(Settings(), tenant, label))


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def keys_list(tenant: str | None) -> None:
    """List keys: id, tenant, prefix, label, created, last used, revoked (never the key)."""
    from rich.console import Console
    from rich.table import Table

    from services.core.auth import list_keys

    with database_session(Settings()) as session:
        found = list_keys(session, tenant)
    table = Table("tenant", "prefix", "label", "created", "last used", "revoked")
    # The id is what `keys revoke` takes: never shortened.
    table.add_column("id", no_wrap=True)
    for key in found:
        table.add_row(
            key.tenant,
            key.prefix + "…",
            key.label or "",
            when(key.created_at),
            when(key.last_used_at),
            when(key.revoked_at),
            key.id,
        )
    # Piped into a file or another program, the table keeps its full width.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


@keys.command("revoke")
@click.argument("key_or_id")
def keys_revoke(key_or_id: str) -> None:
    """Revoke a key, named by its id (`key_...`) or by the key itself; refused at once."""
    from services.core.auth import revoke_key

    with database_session(Settings()) as session:
        revoked = revoke_key(session, key_or_id)
    if revoked is None:
        raise click.ClickException("no such key: give a key id (see `vlmq keys list`) or a key")
    click.echo(f"revoked {revoked.id} ({revoked.tenant}, {revoked.prefix}…)")


@main.group()
def tenants() -> None:
    """List tenants and set their share of the model."""


@tenants.command("list")
def tenants_list() -> None:
    """List tenants: id, name, weight, live keys, created."""
    from rich.console import Console
    from rich.table import Table

    from services.core.tenant_admin import list_tenants

    with database_session(Settings()) as session:
        found = list_tenants(session)
    table = Table("name", "weight", "live keys", "created")
    table.add_column("id", no_wrap=True)
    for tenant in found:
        table.add_row(
            tenant.name,
            f"{tenant.weight:g}",
            str(tenant.live_keys),
            when(tenant.created_at),
            tenant.id,
        )
    Console(width=None if sys.stdout.isatty() else 240).print(table)


@tenants.command("set")
@click.option(
    "--weight",
    type=float,
    required=True,
    help="Its share of the model against other backlogged tenants (1: equal; 2: twice).",
)
@click.argument("tenant")
def tenants_set(weight: float, tenant: str) -> None:
    """Set a tenant's weight (TENANT: its name or id); the scheduler reads it at once."""
    import redis

    from services.core.fair_queue import set_weights
    from services.core.tenant_admin import set_weight, weights

    settings = Settings()
    with database_session(settings) as session:
        try:
            info = set_weight(session, tenant, weight)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        current = weights(session)
    click.echo(f"{info.name} ({info.id}) now has weight {info.weight:g}")
    try:
        set_weights(redis.Redis.from_url(settings.broker_url, socket_timeout=5), current)
    except redis.RedisError:
        click.echo("Redis is not reachable: the workers read the new weight once it is back")


@main.group()
def audit() -> None:
    """Read the audit log: administrative changes and unusual behaviour."""


@audit.command("list")
@click.option("--tenant", default=None, help="Only this tenant's events (its name or id).")
@click.option("--limit", type=click.IntRange(1, 100), default=50, help="How many, newest first.")
def audit_list(tenant: str | None, limit: int) -> None:
    """List audit events, newest first: when, tenant, actor, action, target, address."""
    import sqlalchemy as sa
    from rich.console import Console
    from rich.table import Table

    from services.core.audit import list_events
    from services.core.tables import Tenant

    with database_session(Settings()) as session:
        tenant_id = None
        if tenant is not None:
            found = session.scalar(
                sa.select(Tenant.id).where(sa.or_(Tenant.name == tenant, Tenant.id == tenant))
            )
            if found is None:
                raise click.ClickException(f"no tenant named {tenant!r} (see `vlmq tenants list`)")
            tenant_id = found
        events, _ = list_events(session, tenant_id, limit=limit)
        names = dict(session.execute(sa.select(Tenant.id, Tenant.name)).tuples().all())
    table = Table("when", "tenant", "actor", "action", "target", "address", "details")
    for event in events:
        table.add_row(
            when(event.created_at),
            names.get(event.tenant_id or "", event.tenant_id or "(deployment)"),
            event.actor,
            event.action,
            event.target or "",
            event.address or "",
            json.dumps(event.details, sort_keys=True) if event.details else "",
        )
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def when(moment: datetime | None) -> str:
    """A timestamp as `keys list` shows it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


@contextlib.contextmanager
def database_session(settings: Settings) -> Iterator[Session]:
    """A transaction on the deployment's database, migrated first if needed."""
    from services.core.db import create_db_engine, create_session_factory, session_scope
    from services.core.migrate import upgrade

    upgrade(settings.sqlalchemy_url)
    engine = create_db_engine(settings.sqlalchemy_url)
    try:
        with session_scope(create_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def create_key(settings: Settings, tenant: str, label: str | None) -> str:
    """Migrate if needed, then create a key for `tenant` and return it."""
    from services.core.auth import create_api_key

    with database_session(settings) as session:
        return create_api_key(session, tenant, label)


def local_key(settings: Settings) -> str:
    """The key `vlmq up` keeps in its data folder (made on the first start, made again only
    if it was revoked or the file is gone), so a restart does not mint a key each time."""
    from services.core.auth import is_live_key

    path = settings.data_dir / LOCAL_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        with database_session(settings) as session:
            if key and is_live_key(session, key):
                return key
    key = create_key(settings, "default", "vlmq up")
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


@main.command()
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Run the worker in a child process, restarted when it dies (a job that crashes it "
    "must not stop it); --no-supervise runs it in this process, as `vlmq up` does under its "
    "own supervisor.",
)
def worker(supervise: bool) -> None:
    """Run a model worker for the configured model (one per GPU)."""
    share_metrics(Settings())
    if supervise:
        from services.core.logs import configure_logging
        from vlmq.supervisor import supervise as run_supervised

        configure_logging(Settings())
        start = functools.partial(start_vlmq, ["worker", "--no-supervise"], None)
        sys.exit(run_supervised("worker", start))
    from workers.consumer import run_worker

    run_worker(Settings())


@main.command("background-worker")
@click.option(
    "--queues",
    type=click.Choice(["all", "webhooks", "batches"]),
    default="all",
    show_default=True,
    help="webhook deliveries, batch bookkeeping, or both (production runs them apart)",
)
def background_worker(queues: str) -> None:
    """Run a background worker: webhook deliveries and batch bookkeeping (no model; any
    number of them, anywhere)."""
    share_metrics(Settings())
    from workers.background import run_background_worker

    run_background_worker(Settings(), queues=queues)


@main.command()
@click.option("--workers", "processes", default=2, show_default=True, help="API processes")
@click.option(
    "--threads",
    default=None,
    type=int,
    help="threads per process that answer requests  [default: VLMQ_API_THREADS, 48]",
)
def api(processes: int, threads: int | None) -> None:
    """Run the API (production): `--workers` processes accepting from one listening socket,
    each reading whole requests before a thread answers them (services.api.server)."""
    from services.api.server import check_threads, listening_socket
    from services.core.logs import configure_logging
    from vlmq.supervisor import supervise_all

    if threads:  # the processes' settings (and their waiting caps) follow the option
        os.environ["VLMQ_API_THREADS"] = str(threads)
    settings = Settings()
    share_metrics(settings)
    check_threads(settings)
    sock = listening_socket(settings.host, settings.port)
    argv = ["api-process", "--fd", str(sock.fileno())]
    configure_logging(settings)
    start = functools.partial(start_vlmq, argv, None, sock.fileno())
    structlog.get_logger("vlmq.api").info(
        "api_listening", url=f"http://{settings.host}:{settings.port}", processes=processes
    )
    supervise_all({f"api-{index}": start for index in range(processes)})


@main.command("api-process", hidden=True)
@click.option("--fd", type=int, required=True, help="the listening socket, inherited")
def api_process(fd: int) -> None:
    """One API process of `vlmq api`, answering from the listening socket it inherited."""
    import socket

    from services.api import create_app
    from services.api.server import create_server

    settings = Settings()
    share_metrics(settings)
    sock = socket.socket(fileno=fd)
    server = create_server(create_app(settings), settings, sock=sock)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        server.run()
    finally:
        server.close()


@main.command()
def up() -> None:
    """Run everything on the embedded defaults: Redis, migrations, one worker, the webhook
    worker and the API."""
    # This run's numbers start from zero.
    share_metrics(Settings(), fresh=True)
    from services.api import create_app
    from services.api.server import check_threads, create_server
    from services.core.migrate import upgrade
    from vlmq.embedded_redis import redis_server_binary, start_embedded_redis
    from vlmq.supervisor import Supervisor

    settings = Settings()
    if not Path(settings.model).exists() and Path(settings.model).is_absolute():
        raise click.ClickException(f"model directory {settings.model} does not exist")
    private_data_dir(settings.data_dir)
    embedded = not settings.redis_url
    if embedded:
        password_file = settings.data_dir / REDIS_PASSWORD_FILE
        password = read_or_create_secret(password_file)
        settings = settings.with_overrides(redis_url=settings.broker_url)
    # Bind the port first, so a busy port fails before anything else starts.
    check_threads(settings)
    server = create_server(create_app(settings), settings)
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        if embedded:
            redis_dir = settings.data_dir / "redis"
            port = settings.embedded_redis_port
            binary = redis_server_binary()
            supervisor.add("redis", lambda: start_embedded_redis(redis_dir, port, password, binary))
            click.echo(f"embedded {binary.label} on 127.0.0.1:{port} (password in {password_file})")
        upgrade(settings.sqlalchemy_url)
        key = local_key(settings)
        env = {**os.environ, "VLMQ_REDIS_URL": settings.broker_url}
        # The worker runs under this supervisor, not under a second one of its own.
        supervisor.add("worker", functools.partial(start_vlmq, ["worker", "--no-supervise"], env))
        supervisor.add(
            "background-worker", functools.partial(start_vlmq, ["background-worker"], env)
        )
        base = f"http://{settings.host}:{settings.port}"
        click.echo(
            f"\nvlmq is up on {base} serving {settings.model_id} (playground: {base}/)\n"
            f"API key (kept in {settings.data_dir / LOCAL_KEY_FILE}): {key}\n\n"
            "Try it:\n"
            f"  curl -s {base}/v1/jobs -H 'Authorization: Bearer {key}' -H 'Prefer: wait=30' \\\n"
            "    -F image=@tests/data/red_circle.png -F question='what color is the shape?'\n"
        )
        server.run()  # until SIGTERM or Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        supervisor.stop()


def start_vlmq(
    args: list[str], env: dict[str, str] | None, *pass_fds: int
) -> subprocess.Popen[bytes]:
    """Start `vlmq <args>` as a child process with `env` (None: this process's), handing it
    the descriptors `pass_fds`."""
    argv = [sys.executable, "-m", "vlmq.cli", *args]
    return subprocess.Popen(argv, env=env, pass_fds=pass_fds)  # noqa: S603 (our own command)


def raise_keyboard_interrupt(*_: object) -> None:
    """SIGTERM stops `vlmq up` the way Ctrl-C does."""
    raise KeyboardInterrupt


url_option = click.option(
    "--url",
    envvar="VLMQ_URL",
    default=None,
    help="API base URL (or VLMQ_URL; default: http://127.0.0.1:VLMQ_PORT)",
)
# The key never on the command line, where `ps` and shell histories show it: from the
# environment, or from a file.
key_option = click.option(
    "--key-file",
    envvar="VLMQ_API_KEY_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="a file holding the API key (or VLMQ_API_KEY_FILE; else VLMQ_API_KEY)",
)


def api_base(url: str | None) -> str:
    """The API to call: `--url` / `VLMQ_URL`, else this machine on the configured port."""
    if url:
        return url.rstrip("/")
    settings = Settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
    return f"http://{host}:{settings.port}"


def required_key(key_file: Path | None) -> str:
    """The API key, from `key_file` or `VLMQ_API_KEY`, or a usage error that says where to
    put one."""
    key = key_file.read_text().strip() if key_file else os.environ.get("VLMQ_API_KEY", "")
    if not key:
        raise click.UsageError(
            "no API key: set VLMQ_API_KEY or pass --key-file (`vlmq up` prints one and keeps "
            "it in var/api-key; `vlmq keys create --tenant NAME` makes one)"
        )
    return key


def reports_api_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Print the API's error message and a hint, never a traceback, when a call fails."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from vlmq.client import ApiError

        try:
            command(*args, **kwargs)
        except ApiError as error:
            raise click.ClickException(str(error)) from None

    return run


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("question")
@url_option
@key_option
@click.option("--timeout", default=120.0, show_default=True)
@click.option("--model", default=None, help="The base model or a LoRA adapter (`/v1/models`).")
@click.option("--preset", default=None, help="A prompt preset's name (`/v1/presets`).")
@reports_api_errors
def ask(
    image: Path,
    question: str,
    url: str | None,
    key_file: Path | None,
    timeout: float,
    model: str | None,
    preset: str | None,
) -> None:
    """Ask a question about an image and print the answer."""
    from vlmq.client import get_job, submit_upload

    base, key = api_base(url), required_key(key_file)
    fields = {"question": question}
    fields.update({name: value for name, value in (("model", model), ("preset", preset)) if value})
    job = submit_upload(base, key, (image.name, image.read_bytes()), fields, 30, timeout)
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = get_job(base, key, job["id"], timeout)
    if job["status"] != "succeeded":
        raise click.ClickException(f"job {job['id']} {job['status']}: {job.get('error')}")
    click.echo(job["output"])


@main.group()
def batch() -> None:
    """Bulk work through the Batch API (for example, moderating a folder of images)."""


@batch.command("submit")
@click.argument("jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", default=None, help="Default: the `url` of the file's first line.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait, with a progress bar."
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@url_option
@key_option
@reports_api_errors
def batch_submit(
    jsonl: Path,
    endpoint: str | None,
    wait: bool,
    output: Path | None,
    url: str | None,
    key_file: Path | None,
) -> None:
    """Upload FILE.jsonl, start a batch, and (with --wait) save its output file."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from vlmq.client import api_request, download_file, upload_batch_file

    base, key = api_base(url), required_key(key_file)
    data = jsonl.read_bytes()
    if endpoint is None:
        first = next((line for line in data.splitlines() if line.strip()), b"{}")
        endpoint = json.loads(first).get("url", "/v1/chat/completions")
    file = upload_batch_file(base, key, jsonl.name, data)
    created = api_request(
        base,
        key,
        "POST",
        "/v1/batches",
        {"input_file_id": file["id"], "endpoint": endpoint, "completion_window": "24h"},
    )
    click.echo(f"batch {created['id']} created from {file['id']} ({endpoint})")
    if not wait:
        return
    columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn()) as progress:
        task = progress.add_task("requests", total=None)
        current = created
        while current["status"] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.5)
            current = api_request(base, key, "GET", f"/v1/batches/{created['id']}")
            counts = current["request_counts"]
            progress.update(
                task,
                total=counts["total"] or None,
                completed=counts["completed"] + counts["failed"],
                description=current["status"],
            )
    counts = current["request_counts"]
    click.echo(
        f"batch {current['id']} {current['status']}: {counts['completed']} succeeded, "
        f"{counts['failed']} failed"
    )
    destination = output or jsonl.with_name(jsonl.stem + ".output.jsonl")
    if current.get("output_file_id"):
        download_file(base, key, current["output_file_id"], str(destination))
        click.echo(f"output: {destination}")
    if current.get("error_file_id"):
        errors = destination.with_name(destination.stem + ".errors.jsonl")
        download_file(base, key, current["error_file_id"], str(errors))
        click.echo(f"errors: {errors}")


@batch.command("moderation-file")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="NAME=QUESTION",
    help="A yes/no question per category (default: the deployment's policy).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def batch_moderation_file(folder: Path, categories: tuple[str, ...], out: Path) -> None:
    """Write a /v1/moderations batch file with one line per image in FOLDER."""
    import base64
    import json
    import mimetypes

    policy = dict(item.split("=", 1) for item in categories)
    count = 0
    with out.open("w") as handle:
        for image in sorted(folder.iterdir()):
            mime = mimetypes.guess_type(image.name)[0]
            if not mime or not mime.startswith("image/"):
                continue
            url = f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode()}"
            body: dict[str, object] = {"input": [{"type": "image_url", "image_url": {"url": url}}]}
            if policy:
                body["categories"] = policy
            line = {
                "custom_id": image.name,
                "method": "POST",
                "url": "/v1/moderations",
                "body": body,
            }
            handle.write(json.dumps(line) + "\n")
            count += 1
    click.echo(f"{count} images → {out}")


@batch.command("flagged")
@click.argument("output", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def batch_flagged(output: Path) -> None:
    """Print the custom_id and flagged categories of each flagged line of an output file."""
    import json

    for number, raw in enumerate(output.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            results = line["response"]["body"]["results"]
        except (ValueError, KeyError, TypeError):
            raise click.ClickException(
                f"{output}:{number} is not a line of a moderation batch's output file (it has "
                "no response.body.results); pass the output file `vlmq batch submit` saved, "
                "not the input file"
            ) from None
        for result in results:
            flagged = [name for name, flag in result["categories"].items() if flag]
            if flagged:
                click.echo(f"{line['custom_id']}\t{','.join(flagged)}")


if __name__ == "__main__":
    main()
