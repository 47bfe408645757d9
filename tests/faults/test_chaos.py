"""Chaos: two model workers on one queue, one of them killed at random intervals for two
minutes while jobs, batches and webhooks flow. Then every accepted job is terminal with its
one right answer, every webhook event was delivered, and every batch counts all its lines."""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import redis_db_url
from tests.faults.stack import FaultStack, fault_stack, fresh_postgres_database, report
from tests.support import chat_batch_input, upload_batch_input, wait_until
from tests.webhook_receiver import WebhookReceiver

REDIS_URL = redis_db_url("faults")
CHAOS_S = 120
BATCH_LINES = 50
TIMING: dict[str, Any] = {
    "lease_s": 6,
    "reconcile_interval_s": 2.0,
    "requeue_after_s": 5.0,
    "max_batch": 8,
    "webhook_redeliver_after_s": 2.0,
}


def start_batch(stack: FaultStack, tag: str) -> str:
    """Upload a chat batch of BATCH_LINES lines and start it; returns the batch id."""
    client = stack.app.test_client()
    raw = chat_batch_input(BATCH_LINES, question=f"{tag}-line", tag=f"{tag}-")
    body = {
        "input_file_id": upload_batch_input(client, stack.auth, raw),
        "endpoint": "/v1/chat/completions",
    }
    created = client.post("/v1/batches", json=body, headers=stack.auth)
    assert created.status_code == 200, created.get_json()
    return str(created.get_json()["id"])


def test_two_workers_one_killed_repeatedly_under_load(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    with (
        fresh_postgres_database() as database_url,
        fault_stack(tmp_path, database_url, REDIS_URL, **TIMING) as stack,
    ):
        stack.runtime.redis.flushdb()
        workers = [stack.start_worker(VLMQ_FAKE_SLEEP_S="0.3") for _ in range(2)]
        stack.start_background()
        questions: dict[str, str] = {}
        hooked: set[str] = set()
        batches: list[str] = []
        refused: list[dict[str, Any]] = []
        kills = 0
        stop = threading.Event()
        rng = random.Random(7)

        def submit_jobs() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                question = f"chaos-{n}"
                extra = {"webhook": receiver.url("/hooks/chaos")} if n % 3 == 0 else {}
                status, body = stack.submit(question, **extra)
                if status != 202:
                    refused.append(body)
                    continue
                questions[body["id"]] = question
                if extra:
                    hooked.add(body["id"])
                time.sleep(0.2)

        submitter = threading.Thread(target=submit_jobs, daemon=True)
        submitter.start()
        started = time.monotonic()
        next_batch_at = 5.0
        try:
            while time.monotonic() - started < CHAOS_S:
                time.sleep(rng.uniform(5, 15))
                rng.choice(workers).kill_worker()
                kills += 1
                if time.monotonic() - started > next_batch_at and len(batches) < 3:
                    batches.append(start_batch(stack, f"b{len(batches)}"))
                    next_batch_at += 40
        finally:
            stop.set()
            submitter.join(timeout=30)
        assert not refused

        rows = stack.wait_terminal(list(questions), timeout_s=120)
        wrong = [
            job_id
            for job_id, job in rows.items()
            if job.status != "succeeded" or job.output != f"echo: {questions[job_id]}"
        ]

        def batches_done() -> list[dict[str, Any]] | None:
            client = stack.app.test_client()
            found = [client.get(f"/v1/batches/{b}", headers=stack.auth).get_json() for b in batches]
            return found if all(b["status"] == "completed" for b in found) else None

        finished = wait_until(batches_done, 120, "the batches to complete", interval_s=0.5)

        def completed_events() -> dict[str, set[str]]:
            found: dict[str, set[str]] = collections.defaultdict(set)
            for request in receiver.requests("/hooks/chaos"):
                payload = json.loads(request.body)
                if payload["status"] == "succeeded":
                    found[payload["id"]].add(request.headers["webhook-id"])
            return found

        delivered = wait_until(
            lambda: (events := completed_events()).keys() >= hooked and events,
            60,
            "every completed webhook",
        )
        runs = stack.model_runs()
        report(
            "chaos",
            seconds=CHAOS_S,
            kills=kills,
            jobs=len(questions),
            wrong_or_unfinished=len(wrong),
            model_reruns=sum(1 for q in questions.values() if runs[q] > 1),
            webhook_jobs=len(hooked),
            webhook_ids_per_event=max((len(ids) for ids in delivered.values()), default=0),
            batches=[b["request_counts"] for b in finished],
        )
        assert kills >= 8
        assert not wrong
        assert all(len(delivered[job_id]) == 1 for job_id in hooked)
        assert all(b["request_counts"]["completed"] == BATCH_LINES for b in finished)
