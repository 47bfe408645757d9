"""The cost of LoRA adapters in the backend: one model call mixing adapters and the base,
against the same call with one adapter for every request, and the base alone.

    .venv/bin/python -m bench.adapters --random-model 512:8 --requests 16 --rounds 5

A random-weight GLM-4V (HIDDEN:LAYERS) gets two random LoRA adapters (rank 8 on every
projection of its language model, non-zero, so they change the answers). Each round runs the
same requests (`max_tokens` tokens each, `ignore_eos`) through the continuous engine and
through one static `generate`, in five ways, interleaved: the base on a backend with no
adapters loaded, the base with adapters loaded, every request on adapter `a`, half on `a`
and half on `b`, and a third each on `a`, `b` and the base. Medians of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench.throughput import build_random_model
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import PredictRequest
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.train_easyvqa_lora import TARGET_MODULES

MIXES: dict[str, list[str | None]] = {
    "base, no adapters loaded": [None],
    "base, adapters loaded": [None],
    "one adapter": ["a"],
    "two adapters": ["a", "b"],
    "two adapters and the base": ["a", "b", None],
}


def build_adapter(model_dir: str, seed: int) -> str:
    """A random (non-zero) LoRA adapter of the model, saved in a temporary folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    config = LoraConfig(r=8, target_modules=TARGET_MODULES, init_lora_weights=False)
    out = Path(tempfile.mkdtemp(prefix="vlmq-random-lora-"))
    get_peft_model(model, config).save_pretrained(out)
    return str(out)


def requests(count: int, adapters: list[str | None], max_tokens: int) -> list[PredictRequest]:
    """`count` requests about images of two sizes, their adapters taken in turn."""
    params = GenerationParams(max_tokens=max_tokens, ignore_eos=True)
    batch = []
    for index in range(count):
        image = Image.new("RGB", (64, 64) if index % 2 else (96, 64), "red")
        content = [{"type": "image", "image": image}, {"type": "text", "text": "what color?"}]
        batch.append(
            PredictRequest(
                [{"role": "user", "content": content}],
                params,
                adapter=adapters[index % len(adapters)],
            )
        )
    return batch


def run_continuous(backend: TransformersVLM, batch: list[PredictRequest]) -> float:
    """Seconds to prefill the batch together and decode it to the end."""
    engine = backend.continuous_engine()
    assert engine is not None
    started = time.perf_counter()
    engine.admit(list(enumerate(batch)))
    while len(engine):
        engine.step()
    return time.perf_counter() - started


def run_static(backend: TransformersVLM, batch: list[PredictRequest]) -> float:
    """Seconds of one batched `generate` for the batch."""
    started = time.perf_counter()
    backend.generate(batch, batch[0].params)
    return time.perf_counter() - started


def main() -> None:
    """Build the model and adapters, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description="mixed-adapter batches against one adapter")
    parser.add_argument("--random-model", metavar="HIDDEN:LAYERS", default="512:8")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_random_model(args.random_model)
    adapters = {"a": build_adapter(model, 1), "b": build_adapter(model, 2)}
    plain = TransformersVLM(model)
    plain.setup("cpu")
    with_adapters = TransformersVLM(model, adapters=adapters)
    with_adapters.setup("cpu")
    seconds: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, mix in MIXES.items():
            backend = plain if name.endswith("no adapters loaded") else with_adapters
            batch = requests(args.requests, mix, args.max_tokens)
            for path, run in (("continuous", run_continuous), ("static", run_static)):
                seconds.setdefault((name, path), []).append(run(backend, batch))
    tokens = args.requests * args.max_tokens
    print(
        f"random GLM-4V {args.random_model}, {args.requests} requests x {args.max_tokens} "
        f"tokens in one batch, medians of {args.rounds} rounds (tokens/s; ratio to one adapter)"
    )
    print(f"{'requests on':<28} {'continuous':>18} {'static generate':>18}")
    for name in MIXES:
        cells = []
        for path in ("continuous", "static"):
            rate = tokens / statistics.median(seconds[(name, path)])
            single = tokens / statistics.median(seconds[("one adapter", path)])
            cells.append(f"{rate:8.1f} ({rate / single:4.2f}x)")
        print(f"{name:<28} {cells[0]:>18} {cells[1]:>18}")


if __name__ == "__main__":
    main()
