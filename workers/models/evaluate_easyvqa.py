"""Measure a VLM checkpoint on easy-VQA through the service's own backend.

Each question becomes the `PredictRequest` a worker builds for a job (one user turn: the
image, decoded as the worker decodes it, then the question; greedy, thinking off), batches go
through `TransformersVLM.predict`, and `Prediction.answer` (what a job's `result.answer`
holds) must equal the expected answer word exactly.

    python -m workers.models.evaluate_easyvqa workers/models/easyvqa-glm4v --split test
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TypedDict

from PIL.Image import Image

from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import PredictRequest
from workers.backends.transformers_vlm import TransformersVLM

# Each answer word in French, as the `easyvqa-glm4v-fr` adapter answers.
FRENCH_ANSWERS = {
    "circle": "cercle",
    "rectangle": "rectangle",
    "triangle": "triangle",
    "black": "noir",
    "blue": "bleu",
    "brown": "marron",
    "gray": "gris",
    "green": "vert",
    "red": "rouge",
    "teal": "sarcelle",
    "yellow": "jaune",
    "yes": "oui",
    "no": "non",
}
SHAPE_ANSWERS = frozenset({"circle", "rectangle", "triangle", "cercle"})
YES_NO_ANSWERS = frozenset({"yes", "no", "oui", "non"})
# Every easy-VQA answer is one word; a few tokens leave room to see what else came out.
EVAL_PARAMS = GenerationParams(max_tokens=8)


class TypeScore(TypedDict):
    """Exact-match counts of one answer type."""

    n: int
    correct: int
    accuracy: float


class EvalResult(TypedDict):
    """What `evaluate` measured."""

    split: str
    n: int
    correct: int
    accuracy: float
    per_type: dict[str, TypeScore]
    seconds: float
    examples_wrong: list[tuple[str, str, str]]


def answer_type(answer: str) -> str:
    """'shape', 'yes/no' or 'colour' for an easy-VQA answer word."""
    if answer in SHAPE_ANSWERS:
        return "shape"
    if answer in YES_NO_ANSWERS:
        return "yes/no"
    return "colour"


def load_split(
    split: str = "test", limit: int | None = None
) -> tuple[list[str], list[str], list[str]]:
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


def conversation(image: Image, question: str) -> list[dict[str, Any]]:
    """The single-turn conversation a worker builds for a job (`workers.pipeline.load_input`)."""
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
        }
    ]


def evaluate(
    model_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    backend: TransformersVLM | None = None,
    adapter: str | None = None,
    french: bool = False,
) -> EvalResult:
    """Exact-match accuracy on an easy-VQA split of the checkpoint in `model_dir`.

    `backend` may be passed already set up (then `model_dir` is only a label); `adapter`
    names one of its LoRA adapters to answer with, and `french` expects the answers in
    French. The result holds overall and per-answer-type counts and up to 20 (question,
    expected, got) misses.
    """
    start = time.time()
    if backend is None:
        backend = TransformersVLM(str(model_dir))
        backend.setup(device)
    questions, answers, paths = load_split(split, limit)
    if french:
        answers = [FRENCH_ANSWERS[answer] for answer in answers]
    images: dict[str, Image] = {}
    for path in paths:
        if path not in images:
            images[path] = to_rgb(Path(path).read_bytes())

    per_type: dict[str, TypeScore] = {}
    wrong: list[tuple[str, str, str]] = []
    correct = 0
    for lo in range(0, len(questions), batch_size):
        hi = min(lo + batch_size, len(questions))
        batch = [
            PredictRequest(conversation(images[path], question), EVAL_PARAMS, adapter=adapter)
            for path, question in zip(paths[lo:hi], questions[lo:hi], strict=True)
        ]
        predictions = backend.predict(batch)
        for question, expected, prediction in zip(
            questions[lo:hi], answers[lo:hi], predictions, strict=True
        ):
            score = per_type.setdefault(
                answer_type(expected), {"n": 0, "correct": 0, "accuracy": 0.0}
            )
            score["n"] += 1
            if prediction.answer == expected:
                score["correct"] += 1
                correct += 1
            elif len(wrong) < 20:
                wrong.append((question, expected, prediction.answer))
    for score in per_type.values():
        score["accuracy"] = score["correct"] / score["n"]
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


def format_table(result: EvalResult) -> str:
    """The result as a small plain-text table, one row per answer type and one for all."""
    rows = [(name, s["n"], s["correct"], s["accuracy"]) for name, s in result["per_type"].items()]
    rows.append(("all", result["n"], result["correct"], result["accuracy"]))
    lines = [f"{'answer type':<12} {'questions':>9} {'correct':>8} {'accuracy':>9}"]
    lines += [f"{name:<12} {n:>9} {ok:>8} {100 * acc:>7.2f} %" for name, n, ok, acc in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: evaluate a checkpoint and print the table."""
    parser = argparse.ArgumentParser(description="Exact-match accuracy on easy-VQA.")
    parser.add_argument("model_dir")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = evaluate(
        args.model_dir, args.split, args.limit, batch_size=args.batch_size, device=args.device
    )
    print(f"{args.model_dir}, {args.split} split, {result['seconds']} s")
    print(format_table(result))
    for question, expected, got in result["examples_wrong"][:5]:
        print(f"  wrong: {question!r} expected {expected!r}, got {got!r}")


if __name__ == "__main__":
    main()
