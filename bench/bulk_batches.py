"""Bulk batches through the whole service beside the raw model on the same inputs.

For each endpoint asked for (`/v1/moderations`, `/v1/chat/completions`), builds a batch file
of N lines (easy-VQA images, test split first, then train, then mirrored copies, so the
cache answers none), and in one run measures:

- model alone (the ceiling): `transformers` with no vlmq code (bench/model_alone.py) on the
  same images and questions, PNG decoding and the processor included, one forward pass
  (moderation) or one `generate` (chat) per `--batch` rows, over the first `--raw-lines`
  lines, in a process of its own, before every round of the service and after the last
  (the machine's speed drifts: each round's baseline is the mean of the runs either side);
- vlmq's backend in-process on the same lines (the requests a worker builds, images decoded
  beforehand), once, for where the gap lies: in the backend, or around it;
- vlmq: `vlmq up` (SQLite, embedded Redis, one worker, `VLMQ_MAX_BATCH=--batch`), a fresh
  one each round, from the upload to `completed`, with the peak memory and the CPU per line
  of each of its processes.

It prints every round's figures and their medians over `--rounds`.

    .venv/bin/python -m bench.bulk_batches --lines 10000 --endpoint moderations chat --rounds 3
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench import model_alone
from bench.moderation_batch import POLICY, VARIANTS, labelled_images, tree_rss, variant_png
from bench.throughput import VlmqService, add_model_threads_option, model_threads_env
from services.core.config import BUNDLED_MODEL_DIR, Settings
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import (
    CanonicalRequest,
    GenerationParams,
    canonical_from_messages,
)
from services.core.moderation.service import moderation_inputs
from services.core.requests.generation import generation_params
from vlmq.client import api_request, upload_batch_file

ENDPOINTS = {"moderations": "/v1/moderations", "chat": "/v1/chat/completions"}
# How often the batch is polled: the run ends when the batch is seen `completed`, so a
# coarse poll would add up to a poll's interval to every run.
POLL_S = 0.1
QUESTIONS = ["what shape is in the image?", "what color is the shape?", "is there a circle?"]


def line_body(endpoint: str, url: str, index: int) -> dict[str, Any]:
    """The body of one line: a moderation of the image, or a question about it."""
    image = {"type": "image_url", "image_url": {"url": url}}
    if endpoint == "/v1/moderations":
        return {"input": [image], "categories": POLICY}
    text = {"type": "text", "text": QUESTIONS[index % len(QUESTIONS)]}
    return {"messages": [{"role": "user", "content": [image, text]}], "max_tokens": 4}


def build_file(endpoint: str, lines: int, destination: Path) -> list[dict[str, Any]]:
    """Write the batch file; returns the bodies of its lines."""
    images = labelled_images()
    bodies = []
    with destination.open("w") as handle:
        for index in range(lines):
            path, _shape, split = images[index % len(images)]
            variant = VARIANTS[(index // len(images)) % len(VARIANTS)]
            url = "data:image/png;base64," + base64.b64encode(variant_png(path, variant)).decode()
            body = line_body(endpoint, url, index)
            line = {"custom_id": f"{split}-{index}", "method": "POST", "url": endpoint}
            handle.write(json.dumps({**line, "body": body}) + "\n")
            bodies.append(body)
    return bodies


def predict_requests(endpoint: str, bodies: list[dict[str, Any]], settings: Settings) -> list[Any]:
    """The model requests a worker builds for these lines (images decoded)."""
    from workers.backends.base import PredictRequest

    requests = []
    for body in bodies:
        canonical: CanonicalRequest
        if endpoint == "/v1/moderations":
            [item] = moderation_inputs(body["input"], settings)
            canonical = item.request
            params = GenerationParams(max_tokens=1, score_questions=dict(POLICY))
        else:
            canonical = canonical_from_messages(body["messages"], settings)
            params = generation_params(body, settings)
        images = {image.sha256: image.data for image in canonical.images}
        messages = [
            {
                "role": message["role"],
                "content": [
                    {"type": "image", "image": to_rgb(images[part["sha256"]])}
                    if part["type"] == "image"
                    else part
                    for part in message["content"]
                ],
            }
            for message in canonical.messages
        ]
        requests.append(PredictRequest(messages, params))
    return requests


def raw_rate(model: str, endpoint: str, bodies: list[dict[str, Any]], batch: int) -> float:
    """Requests/s of the backend called in-process on these lines, in batches of `batch`.

    Runs in a process of its own (see `main`): torch's threads must not linger beside the
    service measured next.
    """
    from workers.backends.transformers_vlm import TransformersVLM

    settings = Settings(_env_file=None, model=model)  # type: ignore[call-arg]
    requests = predict_requests(endpoint, bodies, settings)
    backend = TransformersVLM(model)
    backend.setup("auto")
    backend.predict(requests[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(requests), batch):
        backend.predict(requests[start : start + batch])
    return len(requests) / (time.perf_counter() - started)


def raw_in_own_process(
    model: str, endpoint: str, bodies: list[dict[str, Any]], batch: int
) -> float:
    """`raw_rate` in a fresh process, so torch's threads never run beside the service."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(raw_rate, model, endpoint, bodies, batch).result()


def alone_rate(model: str, endpoint: str, bodies: list[dict[str, Any]], batch: int) -> float:
    """Lines/s of the model alone on these lines (see bench/model_alone.py)."""
    if endpoint == "/v1/moderations":
        images = [data_url_bytes(body["input"][0]["image_url"]["url"]) for body in bodies]
        questions = list(POLICY.values())
        return model_alone.in_own_process(model_alone.scores_per_s, model, images, questions, batch)
    items = []
    for body in bodies:
        image_part, text_part = body["messages"][0]["content"]
        items.append((data_url_bytes(image_part["image_url"]["url"]), text_part["text"]))
    max_tokens = int(bodies[0]["max_tokens"])
    return model_alone.in_own_process(model_alone.answers_per_s, model, items, batch, max_tokens)


def data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 data URL."""
    return base64.b64decode(url.split(",", 1)[1])


def run_batch(
    model: str, endpoint: str, jsonl: Path, tmp: Path, batch: int, extra_env: dict[str, str]
) -> dict[str, Any]:
    """The batch through `vlmq up` (`extra_env`: more of its settings): lines/s and the peak
    memory of each process."""
    # A 50,000-line file is larger than the default body cap (25 MiB).
    body_cap = {"VLMQ_MAX_BODY_BYTES": str(jsonl.stat().st_size + 2**20)}
    service = VlmqService(model, tmp, max_batch=batch, extra_env=body_cap | extra_env)
    peak: dict[str, int] = {}
    cpu: dict[str, float] = {}
    try:
        key = service.new_key("bulk")
        started = time.perf_counter()
        file = upload_batch_file(service.base, key, jsonl.name, jsonl.read_bytes())
        job = api_request(
            service.base,
            key,
            "POST",
            "/v1/batches",
            {"input_file_id": file["id"], "endpoint": endpoint},
        )
        root = psutil.Process(service.process.pid)
        while job["status"] not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(POLL_S)
            for command, rss in tree_rss(root).items():
                peak[command] = max(peak.get(command, 0), rss)
            cpu.update(tree_cpu_s(root))
            job = api_request(service.base, key, "GET", f"/v1/batches/{job['id']}")
        elapsed = time.perf_counter() - started
    finally:
        service.stop()
    counts = job["request_counts"]
    return {
        "status": job["status"],
        "counts": counts,
        "seconds": elapsed,
        "lines_per_s": counts["completed"] / elapsed,
        "peak_rss": peak,
        "cpu_s": cpu,
    }


def tree_cpu_s(process: psutil.Process) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process under `process`, by command."""
    found: dict[str, float] = {}
    for child in [process, *process.children(recursive=True)]:
        try:
            times = child.cpu_times()
            command = " ".join(child.cmdline()[-2:])
            found[command] = found.get(command, 0.0) + times.user + times.system
        except psutil.Error:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--endpoint", nargs="+", choices=list(ENDPOINTS), default=list(ENDPOINTS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--raw-lines", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(BUNDLED_MODEL_DIR))
    add_model_threads_option(parser)
    args = parser.parse_args()
    for name in args.endpoint:
        endpoint = ENDPOINTS[name]
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            jsonl = tmp / f"{name}.jsonl"
            bodies = build_file(endpoint, args.lines, jsonl)
            size_mb = jsonl.stat().st_size / 1e6
            sample = bodies[: args.raw_lines]
            backend = raw_in_own_process(args.model, endpoint, sample, args.batch)
            # The model alone before every round and after the last: this machine's speed
            # drifts, so each round is set beside the mean of the runs either side of it.
            alone = [alone_rate(args.model, endpoint, sample, args.batch)]
            results = []
            env = model_threads_env(args)
            for round_number in range(args.rounds):
                round_tmp = tmp / f"round-{round_number}"
                round_tmp.mkdir()
                results.append(run_batch(args.model, endpoint, jsonl, round_tmp, args.batch, env))
                alone.append(alone_rate(args.model, endpoint, sample, args.batch))
        report(endpoint, args, size_mb, len(sample), backend, alone, results)


def report(
    endpoint: str,
    args: argparse.Namespace,
    size_mb: float,
    sampled: int,
    backend: float,
    alone: list[float],
    results: list[dict[str, Any]],
) -> None:
    """Every round's figures beside its baseline, then the medians."""
    print(f"{endpoint}: {args.lines} lines ({size_mb:.1f} MB), batch {args.batch}")
    baselines = [(before + after) / 2 for before, after in itertools.pairwise(alone)]
    shares = []
    for number, (result, baseline) in enumerate(zip(results, baselines, strict=True), 1):
        share = result["lines_per_s"] / baseline
        shares.append(share)
        print(
            f"  round {number}: model alone (transformers, first {sampled} lines) "
            f"{baseline:7.1f} lines/s; vlmq batch {result['status']} {result['counts']} in "
            f"{result['seconds']:.1f} s: {result['lines_per_s']:7.1f} lines/s = {share:.0%}"
        )
    median_alone = statistics.median(baselines)
    print(f"  model alone, runs between the rounds: {', '.join(f'{a:.1f}' for a in alone)}")
    print(
        f"  vlmq's backend in-process, same lines: {backend:7.1f} lines/s "
        f"= {backend / median_alone:.0%} of the model alone's median"
    )
    print(
        f"  median of {len(results)} rounds: model alone {median_alone:.1f} lines/s, vlmq "
        f"{statistics.median(r['lines_per_s'] for r in results):.1f} lines/s, "
        f"share {statistics.median(shares):.0%}"
    )
    commands = sorted({command for result in results for command in result["peak_rss"]})
    for command in commands:
        peak = max(result["peak_rss"].get(command, 0) for result in results)
        cpu_ms = statistics.median(
            ms_per_line(result, result["cpu_s"].get(command, 0.0)) for result in results
        )
        print(f"  peak RSS {peak / 2**20:8.1f} MiB, CPU {cpu_ms:6.2f} ms per line  {command}")
    service_ms = statistics.median(
        ms_per_line(result, sum(result["cpu_s"].values())) for result in results
    )
    print(f"  the service's CPU per line (all its processes, median): {service_ms:.2f} ms")


def ms_per_line(result: dict[str, Any], cpu_s: float) -> float:
    """`cpu_s` seconds of CPU over a round's completed lines, in milliseconds per line."""
    return cpu_s * 1000 / max(1, result["counts"]["completed"])


if __name__ == "__main__":
    main()
