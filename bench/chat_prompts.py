"""The worker's model inputs (`ChatPrompts.encode`) beside `transformers` alone building the
same inputs (`apply_chat_template`, tokenized), on the same easy-VQA questions in one run.

Both take decoded images and questions and return the same tensors (checked here on every
batch); the worker's renders each question's chat template once and keeps the text. The two
alternate for `--rounds` rounds; the medians are reported.

    .venv/bin/python -m bench.chat_prompts --questions 256 --batch 2 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoProcessor

from bench.model_alone import conversation, encoded
from bench.throughput import easyvqa_questions
from services.core.config import BUNDLED_MODEL_DIR
from workers.backends.chat_prompts import ChatPrompts


def ms_per_batch(batches: list[list[Any]], encode: Callable[[list[Any]], Any]) -> float:
    """Milliseconds of CPU per call of `encode`, over every batch."""
    started = time.process_time()
    for batch in batches:
        encode(batch)
    return (time.process_time() - started) * 1000 / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED_MODEL_DIR))
    parser.add_argument("--questions", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2, help="conversations per call")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(args.model)
    processor.tokenizer.padding_side = "left"
    options = {"enable_thinking": False} if "enable_thinking" in processor.chat_template else {}
    conversations = [conversation(q.image, q.text) for q in easyvqa_questions(args.questions)]
    batches = [conversations[i : i + args.batch] for i in range(0, len(conversations), args.batch)]
    prompts = ChatPrompts(processor)
    for batch in batches:  # equal inputs (and every distinct question's text kept)
        ours, alone = prompts.encode(batch, options), encoded(processor, batch, **options)
        assert all(torch.equal(ours[name], alone[name]) for name in alone), "inputs differ"
    alone_ms, ours_ms = [], []
    for _ in range(args.rounds):
        alone_ms.append(ms_per_batch(batches, lambda b: encoded(processor, b, **options)))
        ours_ms.append(ms_per_batch(batches, lambda b: prompts.encode(b, options)))
    alone, ours = statistics.median(alone_ms), statistics.median(ours_ms)
    distinct = len({turn[0]["content"][1]["text"] for turn in conversations})
    print(
        f"{len(conversations)} easy-VQA questions ({distinct} distinct), {args.batch} per call, "
        f"medians of {args.rounds} rounds, CPU ms per call:"
    )
    print(f"  transformers alone (apply_chat_template): {alone:.3f}")
    print(f"  vlmq (ChatPrompts.encode):                {ours:.3f}  ({ours / alone:.2f}x)")
    print(f"  saved per conversation: {(alone - ours) / args.batch:.3f} ms")


if __name__ == "__main__":
    main()
