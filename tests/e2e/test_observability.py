"""What an operator sees of a running deployment: `/metrics` adding up every process, a Grafana
dashboard that queries only what is exported, and JSON logs that follow a request id from the
API into the model worker and the webhook worker.

One stack of real processes serves every test here: `vlmq api` (gunicorn, two processes), a
`vlmq worker` with the tiny model and its own metrics port, and a `vlmq background-worker`, all
sharing one metrics folder, on a SQLite database and a Redis database of their own. A short
load runs once through it: jobs (one with a webhook, one answered from the cache), a streamed
chat completion, a batch, health probes and a tenant pushed past its rate limit.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from services.core.config import Settings
from services.core.metrics import GPU_METRICS
from services.core.migrate import upgrade
from tests.conftest import redis_db_url
from tests.support import (
    REPO_ROOT,
    ApiProcess,
    WorkerProcess,
    chat_batch_input,
    data_url,
    free_port,
    make_settings,
    shape_png,
    wait_until,
)
from tests.webhook_receiver import BackgroundWorkerProcess, WebhookReceiver
from vlmq.cli import create_key

REDIS_URL = redis_db_url("observability")
DASHBOARD = REPO_ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "vlmq.json"
TRACED_ID = "trace-obs-0001"
HEALTH_PROBES = 20
BATCH_LINES = 3
RATE_LIMIT = 30


@dataclass
class Reply:
    """An HTTP answer as a test reads it."""

    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class ObservedStack:
    """The stack, what the load sent through it, and where each process logs."""

    settings: Settings
    base: str
    worker_metrics: str
    logs: dict[str, Path]
    secrets: list[str]
    traced_job: dict[str, Any] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)


def call(
    base: str,
    method: str,
    path: str,
    key: str | None = None,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request to the API; the reply, whatever its status."""
    sent = dict(headers or {})
    if key:
        sent["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{base}{path}", data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw, status, got = error.read(), error.code, dict(error.headers)
    text = raw.decode()
    is_json = got.get("Content-Type", "").startswith("application/json")
    return Reply(
        status, {k.lower(): v for k, v in got.items()}, json.loads(text) if is_json else text
    )


def ready(base: str) -> bool:
    try:
        return call(base, "GET", "/readyz").status == 200
    except OSError:
        return False


def run_load(stack: ObservedStack, key: str, other_key: str, receiver: WebhookReceiver) -> None:
    """The short load every test reads the results of."""
    base = stack.base
    job = {"image": data_url(shape_png("green")), "question": "what color is the shape?"}
    wait = {"Prefer": "wait=30"}
    traced = call(
        base,
        "POST",
        "/v1/jobs",
        key,
        {**job, "max_tokens": 3, "webhook": receiver.url("/hooks/observed")},
        {**wait, "x-request-id": TRACED_ID},
    )
    assert traced.body["status"] == "succeeded", traced.body
    stack.traced_job = traced.body
    stack.replies["traced"] = traced
    # The same question again: answered from the cache at submit, with an id of vlmq's own.
    stack.replies["cached"] = call(base, "POST", "/v1/jobs", key, {**job, "max_tokens": 3}, wait)
    assert stack.replies["cached"].body["status"] == "succeeded"
    stack.replies["bad_id"] = call(
        base, "GET", "/v1/models", key, headers={"x-request-id": "no spaces allowed"}
    )
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)
    image = {"type": "image_url", "image_url": {"url": data_url(shape_png("blue", "square"))}}
    chunks = list(
        client.chat.completions.create(
            model=stack.settings.model_id,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "shape?"}]}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks and chunks[-1].usage is not None
    path = stack.logs["api"].parent / "batch.jsonl"
    path.write_bytes(chat_batch_input(BATCH_LINES, "is there a circle?", tag="obs"))
    file = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(
        lambda: client.batches.retrieve(batch.id).status == "completed", 90, "the batch", 0.3
    )
    for _ in range(HEALTH_PROBES):
        assert call(base, "GET", "/healthz").status == 200
    statuses = [call(base, "GET", "/v1/models", other_key).status for _ in range(RATE_LIMIT + 1)]
    assert statuses[-1] == 429, statuses
    receiver.wait_for("/hooks/observed", 2)


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[ObservedStack]:
    tmp = tmp_path_factory.mktemp("observed")
    database_url = f"sqlite:///{tmp / 'vlmq.db'}"
    upgrade(database_url)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    port, worker_port = free_port(), free_port()
    settings = make_settings(
        tmp,
        database_url,
        REDIS_URL,
        tiny_model_dir,
        host="127.0.0.1",
        port=port,
        log_format="json",
        rate_limit=f"{RATE_LIMIT}/minute",
    )
    key = create_key(settings, "observed", "metrics")
    other_key = create_key(settings, "observed-other", "rate limited")
    logs = {name: tmp / f"{name}.log" for name in ("api", "worker", "background")}
    stack = ObservedStack(
        settings=settings,
        base=f"http://127.0.0.1:{port}",
        worker_metrics=f"http://127.0.0.1:{worker_port}/metrics",
        logs=logs,
        secrets=[key, other_key],
    )
    receiver = WebhookReceiver()
    processes = [
        ApiProcess(settings, logs["api"]),
        WorkerProcess(settings, logs["worker"], VLMQ_METRICS_PORT=str(worker_port)),
        BackgroundWorkerProcess(settings, logs["background"]),
    ]
    try:
        wait_until(lambda: ready(stack.base), 120, f"a ready stack (logs in {tmp})", 0.3)
        run_load(stack, key, other_key, receiver)
        yield stack
    finally:
        for process in processes:
            process.stop()
        receiver.close()
        client.flushdb()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a `/metrics` page, by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, have), value in samples.items()
        if sample == name and set(labels.items()) <= set(have)
    )


def test_metrics_add_up_every_process_of_the_deployment(observed: ObservedStack) -> None:
    scrapes = [scrape(f"{observed.base}/metrics") for _ in range(6)]
    health = [
        total(s, "vlmq_http_requests_total", method="GET", route="/healthz", status="200")
        for s in scrapes
    ]
    # Each scrape is answered by one of gunicorn's two processes, and each adds both up.
    assert health == [HEALTH_PROBES] * 6
    samples = scrapes[-1]
    model = observed.settings.model_id
    assert total(samples, "vlmq_http_requests_total", route="/v1/jobs", status="202") == 2
    assert total(samples, "vlmq_http_requests_total", route="/v1/models", status="429") >= 1
    assert total(samples, "vlmq_rate_limited_total", reason="rate") >= 1
    assert total(samples, "vlmq_http_requests_in_flight") >= 1  # this scrape
    # Two jobs, the streamed completion and the batch's lines.
    finished = total(samples, "vlmq_jobs_finished_total", model=model, status="succeeded")
    assert finished == 3 + BATCH_LINES
    assert total(samples, "vlmq_batch_lines_total", model=model, outcome="succeeded") == BATCH_LINES
    assert total(samples, "vlmq_e2e_request_latency_seconds_count", model=model) == finished
    assert total(samples, "vlmq_cache_lookups_total", model=model, result="hit") >= 1
    assert total(samples, "vlmq_cache_lookups_total", model=model, result="miss") >= 2
    assert total(samples, "vlmq_prompt_tokens_total", model=model) > 0
    assert total(samples, "vlmq_generation_tokens_total", model=model) > 0
    assert total(samples, "vlmq_request_inference_time_seconds_count", model=model) >= 2
    queued = "vlmq_request_queue_time_seconds_count"
    assert total(samples, queued, model=model, priority="interactive") == 2
    assert total(samples, queued, model=model, priority="background") >= 1
    assert total(samples, "vlmq_time_to_first_token_seconds_count", model=model) == 2
    assert total(samples, "vlmq_time_per_output_token_seconds_count", model=model) >= 1
    assert total(samples, "vlmq_batch_size_count", model=model) >= 3
    assert total(samples, "vlmq_webhook_deliveries_total", outcome="delivered") == 2
    assert total(samples, "vlmq_model_loaded", model=model) == 1
    assert total(samples, "vlmq_workers_live", model=model) == 1
    assert total(samples, "vlmq_background_workers_live") == 1
    assert ("vlmq_jobs_queued", (("model", model), ("priority", "interactive"))) in samples
    assert total(samples, "vlmq_jobs_running") == 0
    # The worker's own endpoint (for a Prometheus that scrapes each host) reads the same folder.
    from_worker = scrape(observed.worker_metrics)
    assert total(from_worker, "vlmq_jobs_finished_total", model=model) == finished
    assert total(from_worker, "vlmq_http_requests_total", route="/healthz") == HEALTH_PROBES


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def test_the_dashboard_queries_only_what_the_service_exports(observed: ObservedStack) -> None:
    exported = {name for name, _ in scrape(f"{observed.base}/metrics")}
    queried = {name for expr in dashboard_queries() for name in re.findall(r"\bvlmq_\w+", expr)}
    assert len(queried) >= 15
    # A CPU worker has no device to report: the GPU gauges are checked against the catalog.
    missing = queried - exported - GPU_METRICS
    assert not missing, f"the dashboard queries metrics nobody exports: {sorted(missing)}"
    titles = {panel["title"].lower() for panel in json.loads(DASHBOARD.read_text())["panels"]}
    for wanted in (
        "latency",
        "throughput",
        "error",
        "timeout",
        "queue",
        "batch size",
        "cache hit",
        "tokens/s",
        "gpu memory",
        "gpu utilisation",
        "webhook",
    ):
        assert any(wanted in title for title in titles), f"no panel about {wanted}: {titles}"


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON log (failing on any line that is not a JSON object)."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{path.name}:{number} is not JSON: {line[:200]}")
    return lines


def test_json_logs_follow_the_request_id_from_the_api_to_the_workers(
    observed: ObservedStack,
) -> None:
    replies = observed.replies
    assert replies["traced"].headers["x-request-id"] == TRACED_ID
    assert re.fullmatch(r"req_[0-9a-f]{24}", replies["cached"].headers["x-request-id"])
    assert replies["bad_id"].headers["x-request-id"].startswith("req_")
    logs = {name: json_lines(path) for name, path in observed.logs.items()}
    job_id = observed.traced_job["id"]
    [access] = [
        line
        for line in logs["api"]
        if line["event"] == "request" and line.get("request_id") == TRACED_ID
    ]
    assert access["route"] == "/v1/jobs" and access["method"] == "POST"
    assert access["status"] == 202 and access["duration_ms"] > 0
    assert access["tenant"] and access["job_id"] == job_id
    assert {"timestamp", "level", "logger"} <= set(access)
    [done] = [
        line
        for line in logs["worker"]
        if line["event"] == "job_done" and line.get("request_id") == TRACED_ID
    ]
    assert done["job_id"] == job_id
    assert done["outcome"] == "succeeded"
    attempts = [line for line in logs["background"] if line["event"] == "webhook_attempt"]
    assert len(attempts) == 2 and {line["request_id"] for line in attempts} == {TRACED_ID}
    # Every request the API answered has its access line (the load's and the probes').
    assert sum(line["event"] == "request" for line in logs["api"]) >= HEALTH_PROBES + 10


def test_logs_hold_no_keys_image_bytes_or_colour_codes(observed: ObservedStack) -> None:
    image_bytes = data_url(shape_png("green")).split(",", 1)[1]
    for path in observed.logs.values():
        text = path.read_text()
        for secret in observed.secrets:
            assert secret not in text and secret[-12:] not in text
        assert image_bytes[:64] not in text
        assert "\x1b[" not in text
