"""What the screening gate costs: screened against unscreened throughput, in one run.

    .venv/bin/python -m bench.screening --requests 64 --repeats 5

The bundled model behind the worker's own scheduler (continuous batching, as a worker runs
it) answers the same held-out easy-VQA questions, each from its own thread as a worker's
task threads submit them, twice per repeat in alternation: unscreened, and screened by a
one-question policy that passes them all (`workers.screening.run_one_screened`: the images
are scored in their own forward pass, then answered). Prints the median jobs/s of each and
their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from services.core.config import BUNDLED_MODEL_DIR
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import PredictRequest
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import conversation
from workers.models.train_easyvqa_json import EVAL_QUESTIONS, test_images
from workers.schedulers import Scheduler, create_scheduler
from workers.screening import run_one_screened

# A one-question policy; its threshold is one no score reaches, so every job passes and
# both runs answer the same jobs (the cost measured is the scoring pass).
POLICY = {"black": "is there a black shape?"}
NEVER_FLAGGED = {"black": 2.0}


def run(scheduler: Scheduler, requests: list[PredictRequest]) -> float:
    """Every request from its own thread; the seconds until all were answered."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        outcomes = list(
            pool.map(
                lambda r: run_one_screened(scheduler, r, company=64, time_limit_s=120), requests
            )
        )
    assert all(outcome.prediction.answer for outcome in outcomes)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Measure both in alternation and print their medians and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backend = TransformersVLM(str(BUNDLED_MODEL_DIR))
    backend.setup("cpu")
    scheduler = create_scheduler(backend, max_batch=64, wait_ms=5)
    messages = [
        conversation(to_rgb(Path(path).read_bytes()), EVAL_QUESTIONS["color"])
        for path, _, _ in test_images(limit=args.requests)
    ]
    plain = [PredictRequest(m, GenerationParams(max_tokens=8)) for m in messages]
    screened = [
        PredictRequest(
            m,
            GenerationParams(
                max_tokens=8, screen_questions=POLICY, screen_thresholds=NEVER_FLAGGED
            ),
        )
        for m in messages
    ]
    run(scheduler, plain)  # warm-up
    rates: dict[str, list[float]] = {"unscreened": [], "screened": []}
    for _ in range(args.repeats):
        for name, requests in (("unscreened", plain), ("screened", screened)):
            rates[name].append(len(requests) / run(scheduler, requests))
    unscreened, screened_rate = (statistics.median(rates[n]) for n in ("unscreened", "screened"))
    print(f"{args.requests} jobs per run, {args.repeats} runs each, CPU, continuous scheduler")
    for name in ("unscreened", "screened"):
        runs = ", ".join(f"{rate:.0f}" for rate in rates[name])
        print(f"{name:<11} {statistics.median(rates[name]):7.1f} jobs/s (median; runs {runs})")
    print(f"screened / unscreened: {screened_rate / unscreened:.2f}")


if __name__ == "__main__":
    main()
