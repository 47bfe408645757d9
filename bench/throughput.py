"""Throughput and latency of vlmq against the raw model and a naive Flask + Celery service.

All three serve the same model on the same easy-VQA test questions in one run, so their
ratios hold on a noisy machine; the model alone and vlmq take turns for `--rounds` rounds
(the model alone in a fresh process each time, beside the idle service) and the medians are
reported, with every round's figures:

- model alone (the ceiling): `transformers` with no vlmq code (bench/model_alone.py), PNG
  decoding and the processor included, one `generate` per batch of `concurrency` questions;
- vlmq: `vlmq up` (embedded Redis, SQLite, one worker) over HTTP, `Prefer: wait`;
- naive: bench/naive_service.py (one Celery task per request, no batching, no cache).

It also measures, on vlmq: the service overhead (client latency minus the worker's
inference time, concurrency 1), the latency of cache hits, and the accept rate of
`POST /v1/jobs` with a 64×64 image.

    .venv/bin/python -m bench.throughput --requests 320 --concurrency 1 32 --rounds 3
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from services.core.config import BUNDLED_MODEL_DIR
from tests.support import REPO_ROOT, wait_until
from vlmq.client import submit_upload
from vlmq.embedded_redis import start_embedded_redis

# Generation length of every request; `--max-tokens` changes it (the bundled model stops
# after its one-word answer whatever the limit; a random-weight model uses all of it).
MAX_TOKENS = 4


@dataclass(frozen=True)
class Question:
    """One easy-VQA test question with its image as PNG bytes."""

    image: bytes
    text: str


def easyvqa_questions(count: int) -> list[Question]:
    """The first `count` easy-VQA test questions."""
    from easy_vqa import get_test_image_paths, get_test_questions

    questions, _answers, image_ids = get_test_questions()
    paths = get_test_image_paths()
    return [Question(Path(paths[image_ids[i]]).read_bytes(), questions[i]) for i in range(count)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_load(
    send: Callable[[Question], Any], questions: list[Question], concurrency: int
) -> tuple[float, list[Any]]:
    """Send every question with `concurrency` clients; returns answers/s and the replies."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(send, questions))
    return len(questions) / (time.perf_counter() - started), replies


def raw_ceiling(model: str, questions: list[Question], concurrency: int, max_tokens: int) -> float:
    """Answers/s of the model alone (`transformers`, no vlmq code) in batches of
    `concurrency`. (`max_tokens` is passed: a spawned process has the module's default.)"""
    from bench.model_alone import answers_per_s

    return answers_per_s(model, [(q.image, q.text) for q in questions], concurrency, max_tokens)


class VlmqService:
    """`vlmq up` in a subprocess with its own data directory and embedded Redis."""

    def __init__(
        self,
        model: str,
        tmp: Path,
        max_batch: int,
        log_level: str = "WARNING",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VLMQ_")}
        self.env.update(
            VLMQ_DATA_DIR=str(tmp / "var"),
            VLMQ_PORT=str(self.port),
            VLMQ_EMBEDDED_REDIS_PORT=str(free_port()),
            VLMQ_MODEL=model,
            VLMQ_MAX_BATCH=str(max_batch),
            VLMQ_LOG_LEVEL=log_level,
        )
        self.env.update(extra_env or {})
        self.log = (tmp / "vlmq.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vlmq.cli", "up"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(self.ready, 180, "vlmq ready", 0.5)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def new_key(self, tenant: str) -> str:
        """A key of a new tenant (each phase gets its own, so no phase hits another's cache)."""
        out = subprocess.run(
            [sys.executable, "-m", "vlmq.cli", "keys", "create", "--tenant", tenant],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def sender(
        self, key: str, wait_s: int = 300
    ) -> Callable[[Question], tuple[float, dict[str, Any]]]:
        def send(q: Question) -> tuple[float, dict[str, Any]]:
            fields = {"question": q.text, "max_tokens": str(MAX_TOKENS)}
            started = time.perf_counter()
            job = submit_upload(
                self.base, key, ("q.png", q.image), fields, wait_s=wait_s, timeout_s=600
            )
            return (time.perf_counter() - started) * 1000, job

        return send

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


class NaiveService:
    """bench/naive_service.py: its API and one worker, on an embedded Redis of its own."""

    def __init__(self, model: str, tmp: Path) -> None:
        redis_port = free_port()
        password = secrets.token_urlsafe(16)
        self.redis = start_embedded_redis(tmp / "naive-redis", redis_port, password)
        self.port = free_port()
        env = {
            **os.environ,
            "NAIVE_REDIS_URL": f"redis://:{password}@127.0.0.1:{redis_port}/0",
            "NAIVE_MODEL": model,
            "NAIVE_PORT": str(self.port),
        }
        self.log = (tmp / "naive.log").open("wb")
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.naive_service", role],
                cwd=REPO_ROOT,
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            for role in ("worker", "api")
        ]
        self.base = f"http://127.0.0.1:{self.port}"
        probe = Question(_png(), "what color is the shape?")
        wait_until(lambda: self._try(probe), 180, "naive service ready", 1.0)

    def _try(self, q: Question) -> bool:
        try:
            self.send(q)
            return True
        except OSError:
            return False

    def send(self, q: Question) -> str:
        body = json.dumps(
            {
                "image": base64.b64encode(q.image).decode(),
                "question": q.text,
                "max_tokens": MAX_TOKENS,
            }
        )
        request = urllib.request.Request(
            f"{self.base}/predict", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return str(json.load(response)["output"])

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=60)
        self.redis.terminate()
        self.redis.wait(timeout=30)  # it writes its files until it exits
        self.log.close()


def _png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def build_random_model(size: str) -> str:
    """A random-weight GLM-4V with a text model of HIDDEN:LAYERS, in a temporary folder."""
    from workers.models.glm4v_builder import Glm4vRecipe, TextSize, build_glm4v

    hidden, layers = (int(part) for part in size.split(":"))
    text = TextSize(
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
    )
    out = Path(tempfile.mkdtemp(prefix="vlmq-random-model-")) / f"random-glm4v-{hidden}x{layers}"
    words = [
        "what",
        "color",
        "is",
        "the",
        "shape",
        "in",
        "image",
        "circle",
        "triangle",
        "rectangle",
        "red",
        "blue",
        "green",
    ]
    return str(build_glm4v(Glm4vRecipe(words=words, text=text), out))


def add_model_threads_option(parser: argparse.ArgumentParser) -> None:
    """`--model-cpu-threads`: the service's `VLMQ_MODEL_CPU_THREADS` (the model alone keeps
    torch's own default: it is the ceiling)."""
    parser.add_argument(
        "--model-cpu-threads",
        type=int,
        default=0,
        help="the service's VLMQ_MODEL_CPU_THREADS (0: its default, half the cores)",
    )


def model_threads_env(args: argparse.Namespace) -> dict[str, str]:
    """The service settings `--model-cpu-threads` asks for."""
    threads: int = args.model_cpu_threads
    return {"VLMQ_MODEL_CPU_THREADS": str(threads)} if threads > 0 else {}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> None:
    global MAX_TOKENS
    from bench.model_alone import in_own_process  # torch only once a run starts, as above

    parser = argparse.ArgumentParser(
        description="vlmq throughput against the raw model and a naive service"
    )
    parser.add_argument("--model", default=str(BUNDLED_MODEL_DIR))
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument(
        "--random-model",
        metavar="HIDDEN:LAYERS",
        default=None,
        help="serve a random-weight GLM-4V of this text size instead (inference-bound load)",
    )
    parser.add_argument(
        "--batching",
        choices=["continuous", "static"],
        default="continuous",
        help="the service's VLMQ_BATCHING",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of the model alone and vlmq at every concurrency (medians are reported)",
    )
    add_model_threads_option(parser)
    args = parser.parse_args()
    MAX_TOKENS = args.max_tokens
    if args.random_model:
        args.model = build_random_model(args.random_model)
    questions = easyvqa_questions(args.requests * (len(args.concurrency) + 1))
    phases = {
        c: questions[i * args.requests : (i + 1) * args.requests]
        for i, c in enumerate(args.concurrency)
    }
    # Every figure by concurrency, one value per round (the naive service runs one round).
    rounds: dict[str, dict[int, list[float]]] = {"raw": {}, "vlmq": {}, "naive": {}}
    extra: dict[str, float] = {}
    # CPU milliseconds per job of each vlmq process (and of this load generator), per level.
    cpu_ms: dict[int, dict[str, list[float]]] = {c: {} for c in args.concurrency}

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        service = VlmqService(
            args.model,
            tmp,
            max_batch=max(args.concurrency),
            extra_env={"VLMQ_BATCHING": args.batching} | model_threads_env(args),
        )
        try:
            service.sender(service.new_key("warmup"))(questions[-1])
            root = psutil.Process(service.process.pid)
            for number in range(args.rounds):
                # The model alone and the service take turns, so a machine that slows down
                # or speeds up during the run moves both.
                # (The model alone in a fresh process: torch's threads must not linger beside
                # the service measured next.)
                for c, batch in phases.items():
                    rate = in_own_process(raw_ceiling, args.model, batch, c, MAX_TOKENS)
                    rounds["raw"].setdefault(c, []).append(rate)
                for c, batch in phases.items():
                    # A tenant per round and level: no phase hits another's cache.
                    send = service.sender(service.new_key(f"r{number}c{c}"))
                    before = cpu_seconds(root)
                    rate, replies = run_load(send, batch, c)
                    after = cpu_seconds(root)
                    assert all(job["status"] == "succeeded" for _, job in replies), replies
                    rounds["vlmq"].setdefault(c, []).append(rate)
                    for name in after:
                        used_ms = (after[name] - before.get(name, 0.0)) * 1000 / len(batch)
                        cpu_ms[c].setdefault(name, []).append(used_ms)
                    if c == args.concurrency[0] and number == 0:
                        extra.update(overheads(replies))
            # Cache hits: the first level's questions again, as the same tenant.
            hit_key = service.new_key("hits")
            send = service.sender(hit_key)
            for q in phases[args.concurrency[0]][:32]:
                send(q)
            hits = [send(q)[0] for q in phases[args.concurrency[0]][:32]]
            extra["cache_hit_p50_ms"] = median(hits)
            # Accept rate: submit without waiting, 8 clients, a 64×64 PNG each (distinct pixels).
            accept_key = service.new_key("accept")
            images = [Question(_png_seeded(i), "what color is the shape?") for i in range(200)]
            accept = service.sender(accept_key, wait_s=0)
            rate, _ = run_load(accept, images, 8)
            extra["accept_per_s"] = rate
        finally:
            service.stop()

        naive = NaiveService(args.model, tmp)
        try:
            for c, batch in phases.items():
                rounds["naive"][c] = [run_load(naive.send, batch, c)[0]]
        finally:
            naive.stop()

    results = {kind: {c: median(v) for c, v in by_c.items()} for kind, by_c in rounds.items()}
    report(args.model, args.requests, args.concurrency, results, extra)
    print_rounds(args.concurrency, rounds)
    print_job_cost()
    print(f"CPU per job (ms) of each process, by concurrency (medians of {args.rounds} rounds):")
    for c, per_process in cpu_ms.items():
        medians = {name: median(values) for name, values in per_process.items()}
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(medians.items()))
        totals = [
            sum(values[i] for name, values in per_process.items() if name != LOAD_GENERATOR)
            for i in range(args.rounds)
        ]
        rounds_text = ", ".join(f"{total:.1f}" for total in totals)
        print(
            f"  c={c}: {parts}; the service (all but the load generator) {median(totals):.1f}"
            f" (rounds: {rounds_text})"
        )


def overheads(replies: list[tuple[float, dict[str, Any]]]) -> dict[str, float]:
    """Client latency, the worker's inference time, and their difference (p50s)."""
    latencies = [latency for latency, _ in replies]
    inference = [job["metrics"]["inference_ms"] for _, job in replies]
    return {
        "overhead_p50_ms": median(
            [lat - inf for lat, inf in zip(latencies, inference, strict=True)]
        ),
        "e2e_p50_ms": median(latencies),
        "inference_p50_ms": median(inference),
    }


def print_rounds(concurrency: list[int], rounds: dict[str, dict[int, list[float]]]) -> None:
    """Every round's answers/s, and each round's scaling from the first level to the last."""
    for c in concurrency:
        alone = ", ".join(f"{rate:.1f}" for rate in rounds["raw"][c])
        ours = ", ".join(f"{rate:.1f}" for rate in rounds["vlmq"][c])
        print(f"  rounds at c={c}: model alone {alone} a/s; vlmq {ours} a/s")
    first, last = concurrency[0], concurrency[-1]
    scalings = [
        high / low for high, low in zip(rounds["vlmq"][last], rounds["vlmq"][first], strict=True)
    ]
    text = ", ".join(f"{scaling:.2f}x" for scaling in scalings)
    print(f"  vlmq scaling c={last} vs c={first} by round: {text} (median {median(scalings):.2f}x)")


def print_job_cost() -> None:
    """The SQL statements and Redis round trips of one job, as the counting test measures
    them (tests/integration/test_job_cost.py, on SQLite)."""
    test = "tests/integration/test_job_cost.py"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            test,
            "-q",
            "-s",
            "-k",
            "sqlite",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("one job:"):
            print(line)


# The role of this process in `cpu_seconds`: it sends the load, and is not the service.
LOAD_GENERATOR = "load generator"


def cpu_seconds(root: psutil.Process) -> dict[str, float]:
    """CPU seconds used so far by the service's processes (by role) and by this process."""
    found: dict[str, float] = {}
    for process in [root, *root.children(recursive=True), psutil.Process()]:
        try:
            command = process.cmdline()
            times = process.cpu_times()
        except psutil.Error:
            continue
        role = (
            LOAD_GENERATOR
            if process.pid == os.getpid()
            else "redis"
            if "redis-server" in command[0]
            else command[-1]
            if command[-1] in ("up", "background-worker")
            else "worker"
        )
        found[role] = found.get(role, 0.0) + times.user + times.system
    return found


def report(
    model: str,
    requests: int,
    concurrency: list[int],
    results: dict[str, dict[int, float]],
    extra: dict[str, float],
) -> None:
    """Print each measurement next to what it compares with (medians of the rounds)."""
    print(f"model {model}, {requests} easy-VQA questions per run, max_tokens={MAX_TOKENS}")
    header = ["concurrency", "model alone", "vlmq", "naive", "vlmq/alone", "vlmq/naive"]
    print("{:>12} {:>14} {:>14} {:>14} {:>9} {:>11}".format(*header))
    for c in concurrency:
        raw, ours, base = results["raw"][c], results["vlmq"][c], results["naive"][c]
        rates = f"{raw:>10.1f} a/s {ours:>10.1f} a/s {base:>10.1f} a/s"
        print(f"{c:>12} {rates} {ours / raw:>8.0%} {ours / base:>10.1f}x")
    first, last = concurrency[0], concurrency[-1]
    scaling = results["vlmq"][last] / results["vlmq"][first]
    print(f"vlmq scaling c={last} vs c={first}: {scaling:.1f}x")
    print(
        f"overhead at c=1: e2e p50 {extra['e2e_p50_ms']:.1f} ms, "
        f"inference p50 {extra['inference_p50_ms']:.1f} ms, "
        f"per-job overhead p50 {extra['overhead_p50_ms']:.1f} ms"
    )
    print(f"cache hit over HTTP: p50 {extra['cache_hit_p50_ms']:.2f} ms")
    print(
        f"accept rate of POST /v1/jobs (64x64 PNG, 8 clients): {extra['accept_per_s']:.0f} jobs/s"
    )


def _png_seeded(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


if __name__ == "__main__":
    main()
