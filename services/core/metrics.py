"""Every `vlmq_*` Prometheus metric, the functions that record them, and the scrape.

Names follow vLLM's and TGI's conventions (`*_e2e_request_latency_seconds`,
`*_request_queue_time_seconds`, `*_time_to_first_token_seconds`, `*_prompt_tokens_total`…),
so dashboards built for those read vlmq with a prefix changed. Each metric is recorded in the
process where its event happens: the API (requests, refusals, submit-time cache hits), the
model worker (jobs, tokens, latencies, batch sizes, GPU) and the background worker
(webhook deliveries).

Aggregation is prometheus-client's multiprocess mode. Every process of one host (the API's
API processes, the model worker, the background worker) writes its samples into files in
`VLMQ_METRICS_DIR`, and a scrape adds them up: `vlmq up`'s `/metrics` shows the whole
deployment. Where processes run on different hosts (containers), each host's processes share
a folder of their own and a worker serves it on `VLMQ_METRICS_PORT`; Prometheus scrapes them
all and PromQL's `sum` adds the hosts up. Gauges that describe the deployment rather than
a process (jobs queued and running, live workers) are read at scrape time by
`services.core.gauges`, from the database and the heartbeats.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client import values as prometheus_values
from prometheus_client.core import Metric

from services.core.db import utcnow
from services.core.tables import JobStatus

# prometheus-client switches to multiprocess mode when this is set before its first metric
# value is made; the `vlmq` command sets it from `VLMQ_METRICS_DIR` before anything else.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds, from a cache hit's milliseconds to a long generation's minutes.
LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
    *(20.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
# A batch line may wait hours behind interactive work (a batch's window is 24 h).
QUEUE_BUCKETS = (*LATENCY_BUCKETS, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)

JOBS_FINISHED = Counter(
    "vlmq_jobs_finished",
    "Jobs (batch lines included) that reached a final status; error_type is set when failed.",
    ["model", "status", "error_type"],
)
BATCH_LINES = Counter(
    "vlmq_batch_lines", "Batch lines that reached a final status.", ["model", "outcome"]
)
HTTP_REQUESTS = Counter(
    "vlmq_http_requests", "API requests by route and status code.", ["method", "route", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "vlmq_http_request_duration_seconds",
    "Time the API took to answer a request (a `Prefer: wait` included).",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "vlmq_http_requests_in_flight",
    "API requests being answered now.",
    multiprocess_mode="livesum",
)
RATE_LIMITED = Counter(
    "vlmq_rate_limited",
    "Requests refused by a limit: `rate` (requests per window), `queue` (unfinished jobs), "
    "`queued_tokens` (their tokens) or `queue_wait` (the model's estimated queue wait).",
    ["reason"],
)
CACHE_LOOKUPS = Counter(
    "vlmq_cache_lookups",
    "Answer-cache lookups by result (`hit`, `miss`), at submit and before the model runs.",
    ["model", "result"],
)
CACHE_FOLLOWERS = Counter(
    "vlmq_cache_followers",
    "Jobs that waited for an identical job in flight instead of running the model.",
    ["model"],
)
PROMPT_TOKENS = Counter(
    "vlmq_prompt_tokens", "Prompt tokens of answered jobs.", ["model", "tenant"]
)
GENERATION_TOKENS = Counter(
    "vlmq_generation_tokens", "Generated (completion) tokens of answered jobs.", ["model", "tenant"]
)
WEBHOOK_DELIVERIES = Counter(
    "vlmq_webhook_deliveries",
    "Webhook attempts by outcome: delivered, retrying, failed (no attempt left), gone "
    "(the receiver answered 410) or refused (the outbound address rules forbid the URL).",
    ["outcome"],
)
E2E_LATENCY = Histogram(
    "vlmq_e2e_request_latency_seconds",
    "From submit to the final status, of jobs that ran or came from the cache.",
    ["model"],
    buckets=QUEUE_BUCKETS,
)
QUEUE_TIME = Histogram(
    "vlmq_request_queue_time_seconds",
    "From submit to a worker's first claim; priority is interactive or background.",
    ["model", "priority"],
    buckets=QUEUE_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "vlmq_queue_wait_seconds",
    "From submit to a worker's first claim, per priority band (priority, default, flex, batch).",
    ["priority"],
    buckets=QUEUE_BUCKETS,
)
INFERENCE_TIME = Histogram(
    "vlmq_request_inference_time_seconds",
    "Time in the model (the shared call included) of jobs the model answered.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "vlmq_time_to_first_token_seconds",
    "From submit to the first generated token, of interactive jobs.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "vlmq_time_per_output_token_seconds",
    "Decode time per generated token after the first, of interactive jobs.",
    ["model"],
    buckets=TOKEN_BUCKETS,
)
BATCH_SIZE = Histogram(
    "vlmq_batch_size", "Requests per model call.", ["model"], buckets=BATCH_SIZE_BUCKETS
)
MODEL_LOADED = Gauge(
    "vlmq_model_loaded",
    "Worker processes with the model loaded.",
    ["model"],
    multiprocess_mode="livesum",
)
GPU_MEMORY_ALLOCATED = Gauge(
    "vlmq_gpu_memory_allocated_bytes",
    "GPU memory held by tensors of the worker processes, per device.",
    ["model", "device"],
    multiprocess_mode="livesum",
)
GPU_MEMORY_RESERVED = Gauge(
    "vlmq_gpu_memory_reserved_bytes",
    "GPU memory reserved by the worker processes' caching allocator, per device.",
    ["model", "device"],
    multiprocess_mode="livesum",
)
GPU_UTILIZATION = Gauge(
    "vlmq_gpu_utilization_ratio",
    "Share of the last sample period a kernel ran on the device (NVML), 0 to 1.",
    ["model", "device"],
    multiprocess_mode="livemax",
)
# Families only a GPU worker exports (a CPU worker has no device to report).
GPU_METRICS = frozenset(
    {
        "vlmq_gpu_memory_allocated_bytes",
        "vlmq_gpu_memory_reserved_bytes",
        "vlmq_gpu_utilization_ratio",
    }
)


# Outcomes of a webhook attempt (see WEBHOOK_DELIVERIES).
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed", "gone", "refused")


def start_model_series(model: str) -> None:
    """Make the model worker's labelled series exist at zero from its start, so a rate or
    a dashboard query reads 0 rather than nothing before the first event."""
    MODEL_LOADED.labels(model).set(1)
    for result in ("hit", "miss"):
        CACHE_LOOKUPS.labels(model, result)
    CACHE_FOLLOWERS.labels(model)
    for status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        JOBS_FINISHED.labels(model, status.value, "")


def start_background_series() -> None:
    """The background worker's series at zero from its start (see `start_model_series`)."""
    for outcome in WEBHOOK_OUTCOMES:
        WEBHOOK_DELIVERIES.labels(outcome)


def start_api_series() -> None:
    """The API's series at zero from its start (see `start_model_series`)."""
    for reason in ("rate", "queue"):
        RATE_LIMITED.labels(reason)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from `start` to `end`, if both are known (never negative: clocks differ)."""
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def job_claimed(
    model: str,
    created_at: datetime | None,
    started_at: datetime | None,
    *,
    background: bool,
    band: str = "default",
) -> None:
    """A job's first attempt started: how long it waited in the queue."""
    waited = seconds_between(created_at, started_at)
    if waited is not None:
        priority = "background" if background else "interactive"
        QUEUE_TIME.labels(model, priority).observe(waited)
        QUEUE_WAIT.labels(band).observe(waited)


def job_ended(
    model: str,
    status: str,
    *,
    error_type: str = "",
    in_batch: bool = False,
    created_at: datetime | None = None,
) -> None:
    """A job reached a final status (recorded by the transition that made it so)."""
    JOBS_FINISHED.labels(model, status, error_type).inc()
    if in_batch:
        BATCH_LINES.labels(model, status).inc()
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        took = seconds_between(created_at, utcnow())
        if took is not None:
            E2E_LATENCY.labels(model).observe(took)


def batch_lines_canceled(model: str, count: int, *, expired: bool = False) -> None:
    """Lines canceled together with their batch (canceled by the client, or expired)."""
    if count:
        JOBS_FINISHED.labels(model, JobStatus.CANCELED.value, "").inc(count)
        BATCH_LINES.labels(model, "expired" if expired else JobStatus.CANCELED.value).inc(count)


def job_answered(model: str, tenant: str, result: dict[str, Any], inference_ms: float) -> None:
    """The model answered a job: its tokens and its time in the model."""
    usage = result.get("usage") or {}
    PROMPT_TOKENS.labels(model, tenant).inc(int(usage.get("prompt_tokens") or 0))
    GENERATION_TOKENS.labels(model, tenant).inc(int(usage.get("completion_tokens") or 0))
    if inference_ms > 0:
        INFERENCE_TIME.labels(model).observe(inference_ms / 1000)


def token_timing(
    model: str, to_first_token_s: float, decode_s: float, completion_tokens: int
) -> None:
    """An interactive generation's time to its first token and per later token."""
    TIME_TO_FIRST_TOKEN.labels(model).observe(max(0.0, to_first_token_s))
    if completion_tokens > 1:
        TIME_PER_OUTPUT_TOKEN.labels(model).observe(max(0.0, decode_s) / (completion_tokens - 1))


def cache_looked_up(model: str, hit: bool, count: int = 1) -> None:
    """Answer-cache lookups and whether they found an answer."""
    if count:
        CACHE_LOOKUPS.labels(model, "hit" if hit else "miss").inc(count)


def followed(model: str) -> None:
    """A job waited for its twin in flight (single flight) instead of running the model."""
    CACHE_FOLLOWERS.labels(model).inc()


def model_call(model: str, size: int) -> None:
    """The model ran a call of `size` requests."""
    BATCH_SIZE.labels(model).observe(size)


def refused_by_limit(reason: str) -> None:
    """A tenant's limit refused a request (`rate`, `queue`, `queued_tokens` or
    `queue_wait`)."""
    RATE_LIMITED.labels(reason).inc()


def webhook_attempted(outcome: str) -> None:
    """A webhook attempt ended (see `WEBHOOK_DELIVERIES` for the outcomes)."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def request_started() -> None:
    """An API request is being answered (until `request_ended`)."""
    HTTP_IN_FLIGHT.inc()


def request_ended() -> None:
    """An API request counted by `request_started` is done."""
    HTTP_IN_FLIGHT.dec()


def http_request(method: str, route: str, status: int, duration_s: float) -> None:
    """The API answered a request (`route` is its rule, such as `/v1/jobs/<job_id>`)."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method, route).observe(duration_s)


# ----------------------------------------------------------------------------- the scrape


def multiprocess_dir() -> Path | None:
    """The folder this process's metrics are written to, in multiprocess mode (None when
    prometheus-client was imported before the folder was named: then it keeps values in
    memory, and a scrape reads this process alone)."""
    value = os.environ.get(MULTIPROCESS_ENV)
    if not value or prometheus_values.ValueClass is prometheus_values.MutexValue:
        return None
    return Path(value)


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def forget_dead_processes(directory: Path) -> None:
    """Drop the live gauges of processes that are gone (an API process restarted, a worker
    killed), so `vlmq_model_loaded` and in-flight counts describe live processes only.
    Their counters and histograms stay: totals never go down."""
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not pid_alive(int(match.group(1))):
            prometheus_multiprocess.mark_process_dead(int(match.group(1)), str(directory))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessFilesCollector:
    """The samples every process of this host wrote into the metrics folder, added up."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        """Merge the folder's files (after forgetting dead processes' live gauges)."""
        forget_dead_processes(self.directory)
        files = [str(path) for path in self.directory.glob("*.db")]
        return prometheus_multiprocess.MultiProcessCollector.merge(files, accumulate=True)


def tenant_label(tenant_id: str, show: bool) -> str:
    """A tenant as a metric label: its id when the operator opted in, else a short hash
    (stable, so a dashboard can follow one tenant without the metrics naming it)."""
    if show:
        return tenant_id
    return "t_" + hashlib.sha256(tenant_id.encode()).hexdigest()[:12]


class TenantLabels:
    """A collector whose samples' `tenant` labels are shown as `tenant_label` says."""

    def __init__(self, inner: Any, show: bool) -> None:
        self.inner, self.show = inner, show

    def collect(self) -> Iterable[Metric]:
        """The inner collector's metrics, tenant labels replaced."""
        for metric in self.inner.collect():
            if not self.show:
                metric.samples = [
                    sample._replace(
                        labels={
                            **sample.labels,
                            "tenant": tenant_label(sample.labels["tenant"], False),
                        }
                    )
                    if "tenant" in sample.labels
                    else sample
                    for sample in metric.samples
                ]
            yield metric


def scrape_registry(
    extra: Iterable[Any] = (), *, show_tenant_ids: bool = False
) -> CollectorRegistry:
    """A registry of this host's processes (or of this process outside multiprocess mode),
    plus `extra` collectors; tenants labelled by a hash of their id unless
    `show_tenant_ids`."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    own: Any = ProcessFilesCollector(directory) if directory is not None else REGISTRY
    for collector in [own, *extra]:
        registry.register(TenantLabels(collector, show_tenant_ids))  # type: ignore[arg-type]
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)
