"""Where the model alone's time per moderation line goes: decoding the PNG, encoding the
inputs (chat template, tokenizer, image processor) and the forward pass, timed apart.

The bundled model scores easy-VQA images with one question, in batches of `--batch`, as
`bench.bulk_batches` has the model alone do (`bench.model_alone`, no vlmq code), with one
intra-op thread (what a vlmq worker gives the model on this host: see
`workers/cpu_threads.py`) and with torch's default (every core), each in a fresh process.
Medians of the batches after a warm-up one.

    .venv/bin/python -m bench.model_split --lines 640
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from bench import model_alone
from bench.moderation_batch import POLICY, labelled_images
from services.core.config import BUNDLED_MODEL_DIR

STAGES = ("decode", "encode", "forward")


def split_ms_per_line(threads: int, lines: int, batch: int) -> dict[str, float]:
    """Median milliseconds per line of each stage, with `threads` intra-op threads (0: the
    default)."""
    if threads:
        torch.set_num_threads(threads)
    processor, model = model_alone.load(str(BUNDLED_MODEL_DIR))
    pngs = [path.read_bytes() for path, _shape, _split in labelled_images()[:lines]]
    question = next(iter(POLICY.values()))
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with torch.inference_mode():
        for start in range(0, len(pngs) - batch + 1, batch):
            marks = [time.perf_counter()]
            # Decoding the PNGs is most of building the conversations.
            conversations = [
                model_alone.conversation(png, question) for png in pngs[start : start + batch]
            ]
            marks.append(time.perf_counter())
            inputs = model_alone.encoded(processor, conversations)
            marks.append(time.perf_counter())
            model(**inputs).logits[:, -1, :].float()
            marks.append(time.perf_counter())
            if start == 0:
                continue  # warm-up
            for stage, (begun, ended) in zip(STAGES, itertools.pairwise(marks), strict=True):
                timings[stage].append((ended - begun) * 1000 / batch)
    return {stage: statistics.median(values) for stage, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="the model alone's time per line, by stage")
    parser.add_argument("--lines", type=int, default=640)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print(f"bundled model, one moderation question, {args.lines} lines in batches of {args.batch}")
    print(
        f"{'threads':>8} "
        + " ".join(f"{stage:>9}" for stage in STAGES)
        + f" {'total':>9} {'lines/s':>9}"
    )
    for threads in (1, 0):
        split = model_alone.in_own_process(split_ms_per_line, threads, args.lines, args.batch)
        total = sum(split.values())
        label = str(threads) if threads else "default"
        print(
            f"{label:>8} "
            + " ".join(f"{split[stage]:>9.2f}" for stage in STAGES)
            + f" {total:>9.2f} {1000 / total:>9.0f}"
        )
    print("(milliseconds per line; lines/s = 1000 / total)")


if __name__ == "__main__":
    main()
