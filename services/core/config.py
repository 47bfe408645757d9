"""Every setting of vlmq, read from `VLMQ_*` environment variables (and `.env`).

This is the one registry of configuration: each field has its default here and a line
in `.env.example`. Nothing reads the environment at import time; call `Settings()`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.local_files import REDIS_PASSWORD_FILE, read_secret

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODEL_DIR = REPO_ROOT / "workers" / "models" / "easyvqa-glm4v"
# The LoRA adapter shipped with the bundled model (it answers in French).
BUNDLED_ADAPTER_NAME = "easyvqa-glm4v-fr"
BUNDLED_ADAPTER_DIR = REPO_ROOT / "workers" / "models" / BUNDLED_ADAPTER_NAME
# The LoRA adapter that answers the bundled model's JSON requests (structured output).
JSON_ADAPTER_NAME = "easyvqa-glm4v-json"
JSON_ADAPTER_DIR = REPO_ROOT / "workers" / "models" / JSON_ADAPTER_NAME
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


class Settings(BaseSettings):
    """Configuration of one vlmq deployment (API, workers and CLI read the same)."""

    model_config = SettingsConfigDict(env_prefix="VLMQ_", env_file=".env", extra="ignore")

    # Where the embedded defaults keep their files (SQLite database, embedded Redis).
    data_dir: Path = Path("var")
    # SQLAlchemy URL; empty means SQLite at `<data_dir>/vlmq.db`.
    database_url: str = ""
    # Redis for the queue, cache and events; empty means the embedded Redis of `vlmq up`.
    redis_url: str = ""
    # Port of the embedded Redis that `vlmq up` starts when `redis_url` is empty.
    embedded_redis_port: int = 6399
    # The key that seals secrets stored in the database (webhook signing secrets); empty:
    # a random one kept in `<data_dir>/secret-key`. Set it wherever several hosts share
    # the database (compose requires it).
    secret_key: str = ""

    # The model: a local Hugging Face directory, or a hub id (downloaded only if named).
    model: str = str(BUNDLED_MODEL_DIR)
    # The id clients use in `model`; empty means the model directory's name.
    served_model_name: str = ""
    # "transformers", or "package.module:ClassName" for another backend.
    backend: str = "transformers"
    # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1"...
    device: str = "auto"
    # Threads of the model's CPU work in a worker (torch's intra-op pool); 0: half the
    # host's cores, at least one. The other half is left to the service's own processes
    # (the API, the worker's task threads, Redis): on a host where all of them share the
    # cores, a model using every core makes each job cost more CPU, not less.
    model_cpu_threads: int = 0
    # Default of GLM's chat-template switch for reasoning; requests may override it.
    enable_thinking: bool = False
    # LoRA adapters served beside the base model, as vLLM's `--lora-modules`:
    # "name=path,name2=path2" (PEFT adapter folders). A request picks one as its `model`.
    # "auto": the bundled adapter when the bundled model is served (else none); "": none.
    lora_modules: str = "auto"
    # The adapter that answers JSON requests (`response_format` json_schema / json_object)
    # made of the base model: "auto", the bundled JSON adapter when the bundled model is
    # served; "": none (the base model answers them); else one of `VLMQ_LORA_MODULES`.
    json_adapter: str = "auto"

    # Prompt presets every tenant may use ({name: system prompt}); a tenant's own preset
    # of the same name wins. A request picks one with `"preset": name`.
    presets: dict[str, str] = {
        "customer-service": (
            "You are the customer-service assistant of an online shop. Answer the "
            "customer's question from the product photo, briefly and politely. If the "
            "photo is too unclear to answer, say so and ask for a clearer one."
        )
    }

    # Images larger than this on their longer side are downscaled (aspect ratio kept)
    # before the model sees them, so large photos cannot exhaust GPU memory (0: never);
    # an `image_url` part with `detail: "low"` is downscaled to `low_detail_side`.
    max_image_side: int = 1024
    low_detail_side: int = 448

    # The API listens here (`vlmq up`, `vlmq api`).
    host: str = "127.0.0.1"
    port: int = 8000

    # Request limits, all checked before anything is decoded or stored.
    max_body_bytes: int = 25 * 1024 * 1024
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 36_000_000
    # Memory the image decodes of one API process may hold at once (an image larger than
    # the model needs is decoded once, to be downscaled); more decodes wait for room.
    decode_memory_mb: int = 160
    max_images_per_request: int = 8
    max_question_chars: int = 8000
    # A moderation policy's questions together (each is also within max_question_chars).
    max_policy_chars: int = 16_000
    # A structured-output grammar (a JSON schema, a regex, the choices) in bytes.
    max_grammar_bytes: int = 16_384
    default_max_tokens: int = 256
    max_tokens_limit: int = 4096

    # Fan-out caps: OpenAI messages and content parts per request, choices (`n`) of one chat
    # completion, inputs of one `/v1/moderations` call, and lines of one batch input file.
    max_messages_per_request: int = 64
    max_choices: int = 8
    max_parts_per_request: int = 128
    max_moderation_inputs: int = 32
    max_batch_lines: int = 50_000

    # Remote image URLs: one deadline for the whole fetch (DNS, connect, redirects, body),
    # the fetches one API process runs at once (more are refused with 503 at once), and
    # hosts/CIDRs allowed despite being private.
    fetch_timeout_s: float = 10.0
    max_concurrent_fetches: int = 16
    # ... of which one tenant may hold this many (more of its fetches get 429 at once).
    tenant_max_fetches: int = 4
    outbound_allowlist: str = ""

    # Per-tenant request rate (Flask-Limiter syntax, e.g. "600/minute;20/second"; empty
    # turns it off), counted in Redis and shared by every API process, and the cap on a
    # tenant's unfinished interactive jobs (0 = no cap; batch lines do not count).
    rate_limit: str = "3000/minute"
    # Requests without a valid API key (none, or a wrong one), per client address; empty:
    # not limited.
    unauthenticated_rate_limit: str = "120/minute"
    tenant_max_queued: int = 1000

    # Fair sharing of the model (see `services.core.fair_queue`). The cap on a tenant's
    # unfinished interactive work in tokens (prompt plus `max_tokens`; 0 = no cap); the
    # estimated queue wait past which new `flex` work, and `default` work of a tenant over
    # its fair share, is refused with 429 (0 = never); the share of model tokens batch lines
    # keep under saturating interactive load; and the default `max_queue_ms` of interactive
    # jobs (0 = none): a job not started in time ends `expired`.
    tenant_max_queued_tokens: int = 1_000_000
    max_queue_wait_s: float = 300.0
    batch_min_share: float = 0.15
    default_max_queue_ms: int = 0
    # Celery's task events (sent, received, started, succeeded) for Flower and
    # celery-exporter; off, they cost no Redis publishes.
    celery_task_events: bool = False
    # Name tenants by id in `/metrics` labels (off: a short, stable hash of the id).
    metrics_tenant_ids: bool = False
    # A bearer token for the operator's views on the API port: `/metrics` from any address
    # (without a token, only from this host) and `/readyz`'s reasons (without it, only which
    # check failed). Empty: no token.
    operator_token: str = ""

    # Retention: how long finished jobs, images no queued or running job uses, files and webhook
    # deliveries with their attempts are kept (0 keeps them forever); idempotency keys go
    # once expired. The pruning pass deletes at most `prune_chunk` rows per statement.
    job_retention_s: int = 30 * 86400
    image_retention_s: int = 30 * 86400
    file_retention_s: int = 30 * 86400
    webhook_retention_s: int = 30 * 86400
    # A finished response made with `store: false` whose caller did not read it to the end
    # (one that did deleted it then).
    unstored_response_retention_s: int = 600
    prune_chunk: int = 500

    # Answer cache.
    cache_ttl_s: int = 24 * 3600
    # Share cached answers across tenants (off: each tenant has its own cache).
    cache_shared: bool = False

    # Batching: a worker runs up to `max_batch` jobs in one model call, waiting at most
    # `batch_wait_ms` after the first for more to arrive.
    max_batch: int = 16
    batch_wait_ms: float = 20.0
    # `continuous`: requests join and leave the running batch at every decode step (for the
    # architectures the engine knows; others run `static`); `static`: one `generate` per
    # batch, every request of it waiting for the longest. `max_batch` caps both.
    batching: Literal["continuous", "static"] = "continuous"
    # Continuous batching: while the batch decodes, up to this long for a few arrivals to
    # be prefilled together (a lone request on an idle worker never waits).
    prefill_wait_ms: float = 150.0

    # Workers: the time limit of one job's own work (its model call; time queued behind
    # other calls does not count), and the attempt cap.
    task_soft_time_limit_s: int = 300
    max_attempts: int = 3
    # The lease on a running job: the worker holding the job renews it every third of it,
    # so a dead worker's jobs run again soon after it lapses, and a live one's never do.
    lease_s: int = 20
    # How often the maintenance pass runs (re-enqueue lost jobs, drain the outbox, resume
    # batches), and how long a queued job may wait before the pass checks that its queue
    # message still exists (a Redis that restarted empty loses it).
    reconcile_interval_s: float = 10.0
    requeue_after_s: float = 30.0
    # A batch `finalizing` this long lost its finalizer: a progress check finalizes it again
    # (only one finalization can close it; the loser's files are deleted).
    batch_finalize_stale_s: float = 120.0
    worker_heartbeat_s: float = 5.0

    # The API server (services.api.server): threads per process (`vlmq up`; `vlmq api
    # --threads`), the time a request has to send its headers and then its body (counted
    # from its first byte), how long a kept-alive connection may stay silent, the
    # connections one process holds, and the address of a proxy in front whose
    # X-Forwarded-For names the client ("" for none).
    api_threads: int = 48
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    idle_timeout_s: float = 60.0
    max_connections: int = 2000
    trusted_proxy: str = ""

    # Synchronous calls (`/v1/chat/completions`, `Prefer: wait=N`): the longest wait.
    sync_timeout_s: float = 600.0
    # Synchronous calls and streams one tenant may hold open at once (each holds an API
    # thread until its jobs end); keep it under the API's threads. 0: no cap.
    tenant_max_waiting: int = 32
    # What one tenant keeps stored: files and its jobs' images (bytes), and its batches that
    # have not ended; 0: no cap.
    tenant_max_stored_bytes: int = 10 * 1024**3
    tenant_max_open_batches: int = 100
    max_prefer_wait_s: float = 60.0

    # Webhooks: seconds to wait before each retry (the first attempt is immediate, so
    # attempts = 1 + the number of delays), the deadline of one attempt, how long a pending
    # delivery may be overdue before the maintenance pass sends it again (its message was lost),
    # and the task threads of `vlmq background-worker`.
    webhook_retry_schedule_s: str = "5,30,120,600,1800,3600"
    webhook_timeout_s: float = 10.0
    webhook_redeliver_after_s: float = 120.0
    background_worker_concurrency: int = 8
    # Webhook attempts one tenant may have in progress in one background worker (a tenant
    # whose endpoint hangs holds no more of its threads than this).
    tenant_max_deliveries: int = 2
    # An endpoint that failed this many attempts in a row (no answer, 5xx) is paused this
    # long; its deliveries wait, their attempts unspent (0 failures: never paused).
    webhook_breaker_failures: int = 5
    webhook_breaker_pause_s: float = 30.0
    # After `POST /v1/webhooks/default/secret/rotate`, how long the old secret still signs
    # beside the new one (receivers verify either while they switch).
    webhook_secret_overlap_s: float = 24 * 3600.0

    # How long an `Idempotency-Key` names the object it made.
    idempotency_ttl_s: int = 24 * 3600

    # The default moderation policy: {category: {"question": ..., "threshold": ...}}.
    # Tenants and requests may bring their own. This one suits the bundled model.
    moderation_policy: dict[str, Any] = {
        "triangle": {"question": "is there a triangle?", "threshold": 0.5}
    }

    log_level: str = "INFO"
    # "text" (one line of key=value pairs per event) or "json" (one JSON object per line).
    log_format: Literal["text", "json"] = "text"

    # Prometheus: where the processes of one host write their metrics for a scrape to add up
    # (empty means `<data_dir>/metrics`), and the port a worker serves that folder's metrics on
    # for a scraper that cannot reach them through the API (0: off; the API's `/metrics`
    # already shows every process of its host).
    metrics_dir: str = ""
    metrics_port: int = 0

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _check_retry_schedule(cls, value: str) -> str:
        # A typo in the schedule fails at start, not at a webhook's first retry.
        parse_delays(value)
        return value

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, with the embedded SQLite default filled in."""
        return self.database_url or f"sqlite:///{self.data_dir / 'vlmq.db'}"

    @property
    def metrics_path(self) -> Path:
        """The metrics folder, with the default under `data_dir` filled in."""
        return Path(self.metrics_dir) if self.metrics_dir else self.data_dir / "metrics"

    @property
    def broker_url(self) -> str:
        """The Redis URL, with the embedded Redis default filled in (with the password that
        `vlmq up` keeps in the data folder)."""
        if self.redis_url:
            return self.redis_url
        password_file = self.data_dir / REDIS_PASSWORD_FILE
        auth = f":{quote(read_secret(password_file))}@" if password_file.exists() else ""
        return f"redis://{auth}127.0.0.1:{self.embedded_redis_port}/0"

    @property
    def model_id(self) -> str:
        """The id this deployment serves the model under."""
        return self.served_model_name or Path(self.model.rstrip("/")).name

    @property
    def infer_queue(self) -> str:
        """The name of this model's fair queue (`vlmq.infer.<model>`), in its Redis keys."""
        return "vlmq.infer." + re.sub(r"[^A-Za-z0-9_.-]", "-", self.model_id)

    @property
    def adapters(self) -> dict[str, str]:
        """The LoRA adapters served beside the base model: {name: adapter folder}."""
        return dict(adapter_table(self.lora_modules, self.model))

    @property
    def json_adapter_name(self) -> str | None:
        """The adapter that answers the base model's JSON requests (None: the base)."""
        if self.json_adapter == "auto":
            return JSON_ADAPTER_NAME if JSON_ADAPTER_NAME in self.adapters else None
        return self.json_adapter or None

    @property
    def served_models(self) -> list[str]:
        """Every id a request may name as its `model`: the base, then its adapters."""
        return [self.model_id, *self.adapters]

    @field_validator("lora_modules")
    @classmethod
    def _check_lora_modules(cls, value: str) -> str:
        if value != "auto":
            parse_lora_modules(value)
        return value

    @model_validator(mode="after")
    def _check_adapter_names(self) -> Settings:
        # A request names a model by id: an adapter cannot share the base model's.
        if self.model_id in self.adapters:
            raise ValueError(f"VLMQ_LORA_MODULES names an adapter {self.model_id!r} like the model")
        if self.json_adapter not in ("auto", "") and self.json_adapter not in self.adapters:
            raise ValueError(
                f"VLMQ_JSON_ADAPTER names {self.json_adapter!r}, not one of VLMQ_LORA_MODULES"
            )
        return self

    @property
    def outbound_allowed(self) -> list[str]:
        """The operator's allow-list of hosts and CIDRs for outbound requests."""
        return [item.strip() for item in self.outbound_allowlist.split(",") if item.strip()]

    @property
    def webhook_retry_delays_s(self) -> list[float]:
        """The delays before each webhook retry, in seconds (see `webhook_retry_schedule_s`)."""
        return parse_delays(self.webhook_retry_schedule_s)

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (used by tests and the CLI)."""
        return self.model_copy(update=changes)


def parse_delays(schedule: str) -> list[float]:
    """`"5,30,120"` as `[5.0, 30.0, 120.0]`; a negative or non-numeric item is a ValueError."""
    delays = [float(item) for item in schedule.split(",") if item.strip()]
    if any(delay < 0 for delay in delays):
        raise ValueError(f"retry delays must not be negative: {schedule!r}")
    return delays


@lru_cache(maxsize=8)
def adapter_table(lora_modules: str, model: str) -> tuple[tuple[str, str], ...]:
    """(name, folder) of each adapter `lora_modules` names for `model`, worked out once
    (every submission and every claimed job asks)."""
    if lora_modules == "auto":
        if Path(model).resolve() != BUNDLED_MODEL_DIR:
            return ()
        bundled = (
            (BUNDLED_ADAPTER_NAME, BUNDLED_ADAPTER_DIR),
            (JSON_ADAPTER_NAME, JSON_ADAPTER_DIR),
        )
        return tuple((name, str(path)) for name, path in bundled if path.exists())
    return tuple(parse_lora_modules(lora_modules).items())


def parse_lora_modules(value: str) -> dict[str, str]:
    """`"fr=/adapters/fr,de=/adapters/de"` as {name: path}; a bad item is a ValueError."""
    adapters: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, separator, path = (part.strip() for part in item.partition("="))
        if not separator or not path or not ADAPTER_NAME.match(name):
            raise ValueError(f"VLMQ_LORA_MODULES items are name=path, got {item.strip()!r}")
        if name in adapters:
            raise ValueError(f"VLMQ_LORA_MODULES names {name!r} twice")
        adapters[name] = path
    return adapters
