"""The ceiling of every benchmark: the model run by `transformers` alone, no vlmq code.

The same inputs as the service gets (PNG bytes and questions), decoded by Pillow and
prepared by the model's own processor (chat template included) inside the timed loop, then
one `generate` (answers) or one forward pass (moderation scores) per batch. Nothing here
imports vlmq: what the service spends beyond these figures is its own cost.

Each function runs in the calling process; the benchmarks call it in a fresh process of its
own (`in_own_process`) so that torch's threads never run beside the service measured next.
"""

from __future__ import annotations

import io
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

# One input: the image's encoded bytes and the question asked about it.
Item = tuple[bytes, str]
# What a function run in a process of its own returns.
Result = TypeVar("Result")


def load(model_dir: str) -> tuple[Any, Any]:
    """The processor and the model, in inference mode on the CPU (as on the test machines)."""
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return processor, model


def conversation(image: bytes, question: str) -> list[dict[str, Any]]:
    """One user turn: the decoded image and the question."""
    decoded = Image.open(io.BytesIO(image)).convert("RGB")
    content = [{"type": "image", "image": decoded}, {"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def encoded(processor: Any, conversations: list[list[dict[str, Any]]], **template: Any) -> Any:
    """The batch's model inputs, from the model's own chat template (`template`: its
    switches, such as `enable_thinking`)."""
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
        **template,
    )


@torch.inference_mode()
def answers_per_s(model_dir: str, items: list[Item], batch: int, max_tokens: int) -> float:
    """Answers/s of greedy `generate` over `items` in batches of `batch`."""
    processor, model = load(model_dir)

    def run(chunk: list[Item]) -> None:
        inputs = encoded(processor, [conversation(image, text) for image, text in chunk])
        model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)

    return timed(items, batch, run)


@torch.inference_mode()
def scores_per_s(model_dir: str, images: list[bytes], questions: list[str], batch: int) -> float:
    """Images/s scored on every question: P("yes") from one forward pass per `batch` rows
    (one row per image and question), as a moderation model is used."""
    processor, model = load(model_dir)
    tokenizer = processor.tokenizer
    yes = [tokenizer.convert_tokens_to_ids(word) for word in ("yes", "Yes")]
    no = [tokenizer.convert_tokens_to_ids(word) for word in ("no", "No")]
    yes = [token for token in yes if token != tokenizer.unk_token_id]
    no = [token for token in no if token != tokenizer.unk_token_id]
    rows = [(image, question) for image in images for question in questions]

    def run(chunk: list[Item]) -> None:
        inputs = encoded(processor, [conversation(image, text) for image, text in chunk])
        probabilities = torch.softmax(model(**inputs).logits[:, -1, :].float(), dim=-1)
        p_yes, p_no = probabilities[:, yes].sum(dim=-1), probabilities[:, no].sum(dim=-1)
        (p_yes / (p_yes + p_no).clamp_min(1e-12)).tolist()

    rows_per_s = timed(rows, batch, run)
    return rows_per_s / len(questions)


def timed(items: list[Item], batch: int, run: Callable[[list[Item]], None]) -> float:
    """Items/s of `run` over `items` in chunks of `batch`, after one warm-up chunk."""
    run(items[:batch])
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        run(items[start : start + batch])
    return len(items) / (time.perf_counter() - started)


def in_own_process(function: Callable[..., Result], *args: Any) -> Result:
    """`function(*args)` in a fresh process (spawned: no torch state shared)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()
