"""Evaluate a VLM checkpoint on easy-VQA exactly the way the service answers a job.

The inference path mirrors the service: `processor.apply_chat_template` on a batch of
single-turn conversations (image + question, generation prompt, thinking off, left padding),
greedy `model.generate`, decode only the new tokens with special tokens stripped, strip
whitespace, and compare the result with the expected answer word (exact match).

    python -m workers.models.evaluate_easyvqa workers/models/easyvqa-glm4v --split test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHAPE_ANSWERS = frozenset({"circle", "rectangle", "triangle"})
YES_NO_ANSWERS = frozenset({"yes", "no"})


def answer_type(answer: str) -> str:
    """'shape', 'yes/no' or 'colour' for an easy-VQA answer word."""
    if answer in SHAPE_ANSWERS:
        return "shape"
    if answer in YES_NO_ANSWERS:
        return "yes/no"
    return "colour"


def load_split(split: str = "test", limit: int | None = None):
    """(questions, answers, image paths) of an easy-VQA split, the first `limit` questions."""
    from easy_vqa import (
        get_test_image_paths,
        get_test_questions,
        get_train_image_paths,
        get_train_questions,
    )

    if split == "test":
        questions, answers, image_ids = get_test_questions()
        paths = get_test_image_paths()
    elif split == "train":
        questions, answers, image_ids = get_train_questions()
        paths = get_train_image_paths()
    else:
        raise ValueError(f"unknown split {split!r} (use 'train' or 'test')")
    if limit is not None:
        questions, answers, image_ids = questions[:limit], answers[:limit], image_ids[:limit]
    return list(questions), list(answers), [paths[i] for i in image_ids]


def conversation(image, question: str) -> list[dict]:
    """The single-turn conversation the service builds for one job."""
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
        }
    ]


def answer_batch(model, processor, images, questions, max_new_tokens: int = 8) -> list[str]:
    """Greedy answers for a batch of (PIL image, question) pairs, decoded like the service."""
    import torch

    inputs = processor.apply_chat_template(
        [conversation(img, q) for img, q in zip(images, questions)],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        enable_thinking=False,
        padding=True,
    )
    inputs = inputs.to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
    return [t.strip() for t in texts]


def evaluate(
    model_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 256,
    model=None,
    processor=None,
    progress: bool = False,
) -> dict:
    """Exact-match accuracy of the checkpoint in `model_dir` on an easy-VQA split.

    Returns {"n", "correct", "accuracy", "per_type": {type: {"n", "correct", "accuracy"}},
    "seconds", "examples_wrong": [up to 20 (question, expected, got)]}. `model` and
    `processor` may be passed already loaded (then `model_dir` is only a label).
    """
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    start = time.time()
    if processor is None:
        processor = AutoProcessor.from_pretrained(model_dir)
    if model is None:
        model = AutoModelForImageTextToText.from_pretrained(model_dir)
    model.eval()
    questions, answers, paths = load_split(split, limit)
    cache: dict[str, Image.Image] = {}

    def image(path: str) -> Image.Image:
        if path not in cache:
            with Image.open(path) as im:
                cache[path] = im.convert("RGB")
        return cache[path]

    per_type: dict[str, dict] = {}
    wrong: list[tuple[str, str, str]] = []
    correct = 0
    for lo in range(0, len(questions), batch_size):
        hi = min(lo + batch_size, len(questions))
        got = answer_batch(model, processor, [image(p) for p in paths[lo:hi]], questions[lo:hi])
        for q, a, g in zip(questions[lo:hi], answers[lo:hi], got):
            t = per_type.setdefault(answer_type(a), {"n": 0, "correct": 0})
            t["n"] += 1
            if g == a:
                t["correct"] += 1
                correct += 1
            elif len(wrong) < 20:
                wrong.append((q, a, g))
        if progress:
            print(f"  eval {hi}/{len(questions)} acc so far {correct / hi:.4f}", flush=True)
    for t in per_type.values():
        t["accuracy"] = t["correct"] / t["n"]
    n = len(questions)
    return {
        "split": split,
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "per_type": dict(sorted(per_type.items())),
        "seconds": round(time.time() - start, 1),
        "examples_wrong": wrong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(json.dumps(evaluate(args.model_dir, args.split, args.limit, progress=True), indent=2))


if __name__ == "__main__":
    main()
