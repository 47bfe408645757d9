"""Service overhead: end-to-end latency of one job next to the model's own inference time.

Starts `vlmq up` (SQLite, embedded Redis, one worker) on a tiny random-weight GLM-4V, sends
jobs one at a time over HTTP with `Prefer: wait`, and prints, for the same jobs, the
client-observed latency, the worker's `inference_ms`, and their difference (the overhead).
Every job uses a new image so none is a cache hit; then it measures cache hits separately.

    .venv/bin/python -m bench.overhead --jobs 50
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.throughput import VlmqService
from vlmq.client import submit_upload
from workers.models.glm4v_builder import Glm4vRecipe, build_glm4v


def png(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post_job(base: str, key: str, image: bytes, max_tokens: int) -> tuple[float, dict[str, Any]]:
    """Submit one job and wait for it; returns the client-observed latency and the job."""
    fields = {"question": "what color is the shape?", "max_tokens": str(max_tokens)}
    started = time.perf_counter()
    job = submit_upload(base, key, ("a.png", image), fields, wait_s=60, timeout_s=120)
    return (time.perf_counter() - started) * 1000, job


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered):8.2f} ms   p90 {p90:8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_glm4v(
            Glm4vRecipe(words=["what", "color", "is", "the", "shape"]), Path(tmp) / "tiny"
        )
        service = VlmqService(str(model), Path(tmp), max_batch=8)
        try:
            base, key = service.base, service.new_key("overhead")
            post_job(base, key, png(10**6), args.max_tokens)  # warm-up
            e2e, inference, overhead, queue = [], [], [], []
            for index in range(args.jobs):
                latency, job = post_job(base, key, png(index), args.max_tokens)
                assert job["status"] == "succeeded" and not job["cache_hit"], job
                metrics = job["metrics"]
                e2e.append(latency)
                inference.append(float(metrics["inference_ms"]))
                queue.append(float(metrics["queue_ms"]))
                overhead.append(latency - float(metrics["inference_ms"]))
            hits = [
                post_job(base, key, png(index), args.max_tokens)[0] for index in range(args.jobs)
            ]
        finally:
            service.stop()
    print(f"{args.jobs} sequential jobs, tiny random GLM-4V, max_tokens={args.max_tokens}, CPU")
    print(f"  end-to-end (client)      {summary(e2e)}")
    print(f"  model inference (worker) {summary(inference)}")
    print(f"  overhead = e2e - infer   {summary(overhead)}")
    print(f"  of which queue wait      {summary(queue)}")
    print(f"  cache hit (same request) {summary(hits)}")


if __name__ == "__main__":
    main()
