"""Continuous against static batching, both through the whole service, in one run.

A random-weight GLM-4V large enough that inference dominates (`--random-model 512:8`),
`--requests` jobs from `--concurrency` clients whose first requests are staggered, each job
asking for one of `--lengths` tokens (4 or 48 by default, drawn with a fixed seed) with
`ignore_eos`, so every answer has its asked length. The light staggered load:
`--requests 32 --concurrency 16 --stagger-ms 100 --lengths 4 32`. Each round also reports
the CPU seconds per job of the service's processes. Each mode gets its own `vlmq up`
(`VLMQ_BATCHING=static|continuous`), warmed up first; the modes alternate for `--rounds`
rounds and the medians are reported.

    .venv/bin/python -m bench.continuous --random-model 512:8 --requests 64 --concurrency 16
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.throughput import (
    LOAD_GENERATOR,
    VlmqService,
    add_model_threads_option,
    build_random_model,
    cpu_seconds,
    easyvqa_questions,
    model_threads_env,
)

MODES = ("static", "continuous")


@dataclass(frozen=True)
class Outcome:
    """One job as the client saw it."""

    max_tokens: int
    completion_tokens: int
    latency_s: float


@dataclass(frozen=True)
class RoundResult:
    """One mode's run of the whole load."""

    tokens_per_s: float
    requests_per_s: float
    short_p50_s: float
    long_p50_s: float
    # The worker's model calls (decode steps, with continuous batching; prefills are not
    # counted) and the mean number of requests in each, from `vlmq_batch_size`.
    model_calls: int
    requests_per_call: float
    # CPU milliseconds per job of all the service's processes.
    cpu_ms_per_job: float


def batch_size_totals(base: str) -> tuple[float, float]:
    """(calls, requests) of the `vlmq_batch_size` histogram in the service's /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    calls = requests = 0.0
    for line in text.splitlines():
        if line.startswith("vlmq_batch_size_count"):
            calls += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vlmq_batch_size_sum"):
            requests += float(line.rsplit(" ", 1)[1])
    return calls, requests


def submit(base: str, key: str, image: bytes, question: str, max_tokens: int) -> dict[str, Any]:
    """POST /v1/jobs and wait for the finished job."""
    body = {
        "image": "data:image/png;base64," + base64.b64encode(image).decode(),
        "question": question,
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        f"{base}/v1/jobs",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Prefer": "wait=600",
        },
    )
    with urllib.request.urlopen(request, timeout=900) as response:
        job: dict[str, Any] = json.load(response)
    return job


def run_round(
    service: VlmqService,
    key: str,
    load: list[tuple[bytes, str, int]],
    concurrency: int,
    stagger_s: float,
) -> RoundResult:
    """Send the load with `concurrency` clients, client i starting after i × `stagger_s`."""
    queue = list(enumerate(load))
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def client(index: int) -> None:
        time.sleep(index * stagger_s)
        while True:
            with lock:
                if not queue:
                    return
                _, (image, question, max_tokens) = queue.pop(0)
            started = time.perf_counter()
            job = submit(service.base, key, image, question, max_tokens)
            latency = time.perf_counter() - started
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
            tokens = int(job["result"]["usage"]["completion_tokens"])
            with lock:
                outcomes.append(Outcome(max_tokens, tokens, latency))

    calls_before, requests_before = batch_size_totals(service.base)
    root = psutil.Process(service.process.pid)
    cpu_before = cpu_seconds(root)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client, i) for i in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(root)
    service_cpu_s = sum(
        seconds - cpu_before.get(role, 0.0)
        for role, seconds in cpu_after.items()
        if role != LOAD_GENERATOR
    )
    calls_after, requests_after = batch_size_totals(service.base)
    shortest = min(o.max_tokens for o in outcomes)
    longest = max(o.max_tokens for o in outcomes)
    calls = int(calls_after - calls_before)
    assert all(o.completion_tokens == o.max_tokens for o in outcomes), "ignore_eos not honoured"
    return RoundResult(
        tokens_per_s=sum(o.completion_tokens for o in outcomes) / wall,
        requests_per_s=len(outcomes) / wall,
        short_p50_s=statistics.median(o.latency_s for o in outcomes if o.max_tokens == shortest),
        long_p50_s=statistics.median(o.latency_s for o in outcomes if o.max_tokens == longest),
        model_calls=calls,
        requests_per_call=(requests_after - requests_before) / max(1, calls),
        cpu_ms_per_job=service_cpu_s * 1000 / len(outcomes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="continuous against static batching")
    parser.add_argument("--random-model", metavar="HIDDEN:LAYERS", default="512:8")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stagger-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4, 48])
    add_model_threads_option(parser)
    args = parser.parse_args()
    model = build_random_model(args.random_model)
    draw = random.Random(0)
    questions = easyvqa_questions(args.requests)
    # Every round sends the same load under a new tenant's key: nothing comes from the cache.
    load = [(q.image, q.text, draw.choice(args.lengths)) for q in questions]
    results: dict[str, list[RoundResult]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp_name:
        services = {}
        try:
            for mode in MODES:
                tmp = Path(tmp_name) / mode
                tmp.mkdir()
                services[mode] = VlmqService(
                    model,
                    tmp,
                    max_batch=args.concurrency,
                    extra_env={"VLMQ_BATCHING": mode} | model_threads_env(args),
                )
            for round_number in range(args.rounds + 1):  # round 0 warms up
                for mode in MODES:
                    service = services[mode]
                    key = service.new_key(f"{mode}-{round_number}")
                    result = run_round(service, key, load, args.concurrency, args.stagger_ms / 1000)
                    if round_number:
                        results[mode].append(result)
                    print(f"round {round_number} {mode}: {result}", flush=True)
        finally:
            for service in services.values():
                service.stop()
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[RoundResult]]) -> None:
    """Medians of each mode and the ratios continuous / static."""

    def med(mode: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[mode])

    print(
        f"\n{args.requests} jobs, concurrency {args.concurrency}, stagger {args.stagger_ms:g} ms, "
        f"max_tokens from {args.lengths} "
        f"with ignore_eos, random GLM-4V {args.random_model}, medians of {args.rounds} rounds"
    )
    print(f"{'':24}{'static':>12}{'continuous':>12}{'ratio':>8}")
    for field, label in (
        ("tokens_per_s", "tokens/s"),
        ("requests_per_s", "requests/s"),
        ("short_p50_s", f"p50 {min(args.lengths)}-token (s)"),
        ("long_p50_s", f"p50 {max(args.lengths)}-token (s)"),
        ("model_calls", "model calls"),
        ("requests_per_call", "requests per call"),
        ("cpu_ms_per_job", "service CPU ms per job"),
    ):
        static, continuous = med("static", field), med("continuous", field)
        print(f"{label:24}{static:12.2f}{continuous:12.2f}{continuous / static:8.2f}")


if __name__ == "__main__":
    main()
