"""What constrained decoding costs: tokens/s with a JSON schema against without, in one run.

    .venv/bin/python -m bench.structured_output --requests 64 --repeats 5

The bundled model's continuous engine (the decode loop a worker drives) answers the same
held-out easy-VQA questions twice per repeat, in alternation: under the strict
`{"color", "shape"}` schema (every row masked at every step), and free, generating as many
tokens (`ignore_eos`, `max_tokens` set to the constrained answers' longest), both through
the JSON adapter, so the grammar is the only difference. The baseline runs in the same
repeats: `transformers` alone (no vlmq code: the model and the adapter loaded with PEFT, one
`generate` of the same prompts, as many tokens). Prints the median tokens/s of each and
their ratios (the issue's target: constrained at least 75 % of free).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.model_alone import encoded, load
from services.core.config import BUNDLED_MODEL_DIR, JSON_ADAPTER_DIR, JSON_ADAPTER_NAME
from services.core.inputs.grammars import Grammar
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import Generation, PredictRequest
from workers.backends.continuous import ContinuousEngine
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import conversation
from workers.models.train_easyvqa_json import EVAL_QUESTIONS, answer_schema, test_images

COLOURS = ["black", "blue", "brown", "gray", "green", "red", "teal", "yellow"]


def run(engine: ContinuousEngine, requests: list[PredictRequest]) -> tuple[float, list[Generation]]:
    """All requests admitted at once, then decoded to the end: (seconds, generations)."""
    start = time.perf_counter()
    finished: list[Generation] = engine.admit(list(enumerate(requests)))
    while len(engine):
        finished += engine.step()
    return time.perf_counter() - start, finished


def transformers_alone(messages: list[list[dict[str, Any]]], length: int) -> Callable[[], float]:
    """The baseline, with no vlmq code: the bundled model and the JSON adapter loaded by
    `transformers` and PEFT, every prompt in one left-padded `generate` of exactly `length`
    greedy tokens; returns a run's tokens/s."""
    from peft import PeftModel

    processor, base = load(str(BUNDLED_MODEL_DIR))
    model = PeftModel.from_pretrained(base, str(JSON_ADAPTER_DIR)).eval()
    # Thinking off, as vlmq's default asks the chat template.
    inputs = encoded(processor, messages, enable_thinking=False)

    @torch.inference_mode()
    def one_run() -> float:
        start = time.perf_counter()
        model.generate(**inputs, max_new_tokens=length, min_new_tokens=length, do_sample=False)
        return len(messages) * length / (time.perf_counter() - start)

    return one_run


def main(argv: list[str] | None = None) -> None:
    """Measure both modes in alternation and print their medians and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backend = TransformersVLM(
        str(BUNDLED_MODEL_DIR), adapters={JSON_ADAPTER_NAME: str(JSON_ADAPTER_DIR)}
    )
    backend.setup("cpu")
    engine = backend.continuous_engine()
    assert isinstance(engine, ContinuousEngine)
    schema = json.dumps(answer_schema(COLOURS), separators=(",", ":"))
    grammar = Grammar(kind="json_schema", value=schema)
    images = test_images(limit=args.requests)
    messages = [
        conversation(to_rgb(Path(path).read_bytes()), EVAL_QUESTIONS["color"])
        for path, _, _ in images
    ]
    constrained = [
        PredictRequest(
            m, GenerationParams(max_tokens=64, grammar=grammar), adapter=JSON_ADAPTER_NAME
        )
        for m in messages
    ]
    # A warm-up run; its longest answer sets the free rows' length.
    _, warm_up = run(engine, constrained)
    longest = max(g.prediction.completion_tokens for g in warm_up)
    free = [
        PredictRequest(
            m, GenerationParams(max_tokens=longest, ignore_eos=True), adapter=JSON_ADAPTER_NAME
        )
        for m in messages
    ]
    baseline = transformers_alone(messages, longest)
    rates: dict[str, list[float]] = {"constrained": [], "free": [], "transformers": []}
    for _ in range(args.repeats):
        rates["transformers"].append(baseline())
        for name, requests in (("free", free), ("constrained", constrained)):
            seconds, finished = run(engine, requests)
            tokens = sum(g.prediction.completion_tokens for g in finished)
            rates[name].append(tokens / seconds)
    free_rate = statistics.median(rates["free"])
    constrained_rate = statistics.median(rates["constrained"])
    alone = statistics.median(rates["transformers"])
    print(f"{args.requests} requests per run, {args.repeats} runs each, CPU, continuous engine")
    print(f"transformers alone {alone:8.1f} tokens/s (median; runs {fmt(rates['transformers'])})")
    print(f"free        {free_rate:8.1f} tokens/s (median; runs {fmt(rates['free'])})")
    print(
        f"constrained {constrained_rate:8.1f} tokens/s (median; runs {fmt(rates['constrained'])})"
    )
    print(f"constrained / free: {constrained_rate / free_rate:.2f}")
    print(f"constrained / transformers alone: {constrained_rate / alone:.2f}")


def fmt(values: list[float]) -> str:
    """The values, rounded, comma-separated."""
    return ", ".join(f"{value:.0f}" for value in values)


if __name__ == "__main__":
    main()
