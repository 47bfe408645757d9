"""Train `easyvqa-glm4v-fr`: a LoRA adapter on the bundled model that answers in French.

    nice -n 19 python -m workers.models.train_easyvqa_lora --out workers/models/easyvqa-glm4v-fr

Recipe (see the README.md this writes next to the adapter):

1. `add_answer_words`: the base model's word-level vocabulary gets the French answer words
   (an adapter cannot add tokens, and a mixed-adapter batch needs one vocabulary). Their
   input embeddings copy those of the English words they translate; their output rows copy
   the row of a word that never answers ("what"), so the base model's greedy answers stay
   exactly what they were (on a tie, argmax takes the lower id). Run once; a second run
   finds the words there and changes nothing.
2. A PEFT LoRA (rank 8) on every projection of the language model, and a trained copy of
   the LM head (`modules_to_save`), trained like the base's phase 2: vision tower frozen and
   its visual tokens cached, each easy-VQA training question formatted as the service
   formats a job, loss on the (French) answer word and the end-of-text token only.
3. Save the adapter, then measure exact-match accuracy on the full test split, with French
   answers, through the service's own backend (`TransformersVLM` with the adapter loaded),
   and the base model's accuracy beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer

from services.core.config import BUNDLED_ADAPTER_NAME, BUNDLED_MODEL_DIR
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import FRENCH_ANSWERS, EvalResult, evaluate
from workers.models.train_easyvqa import (
    Options,
    PromptEncoder,
    Run,
    Tee,
    load_data,
    load_images,
    log_evaluation,
    seed_everything,
    train_vqa,
)

# The options dataclass a command line fills in (`options_from`).
Opts = TypeVar("Opts")
# A question word: its output row never wins at an answer position.
NEVER_ANSWERS = "what"
# LoRA on every projection of the language model (not the vision tower: its layers see
# patches, not requests, so a mixed-adapter batch could not split them by row).
TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_up_proj|down_proj)"


@dataclasses.dataclass(frozen=True)
class LoraOptions:
    """The command-line options of the adapter's training."""

    out: str = f"workers/models/{BUNDLED_ADAPTER_NAME}"
    base: str = str(BUNDLED_MODEL_DIR)
    threads: int = 2
    seed: int = 0
    rank: int = 8
    alpha: int = 16
    steps: int = 600
    batch: int = 128
    lr: float = 3e-3
    warmup: int = 30
    log_every: int = 50
    eval_every: int = 200


def options_from(argv: list[str] | None, kind: type[Opts], description: str) -> Opts:
    """A dataclass of options from the command line, one `--flag` per field (its default
    is the field's: the recipe of the shipped adapter)."""
    defaults = kind()
    parser = argparse.ArgumentParser(description=description)
    for option in dataclasses.fields(kind):  # type: ignore[arg-type]
        value = getattr(defaults, option.name)
        parser.add_argument(f"--{option.name.replace('_', '-')}", type=type(value), default=value)
    return kind(**vars(parser.parse_args(argv)))


def parse_options(argv: list[str] | None = None) -> LoraOptions:
    """Options from the command line (defaults are the recipe of the shipped adapter)."""
    return options_from(argv, LoraOptions, "Train the French LoRA of the bundled model.")


def add_answer_words(base: Path, log: Tee) -> None:
    """Give the base model the French answer words (see step 1 of the module docstring)."""
    from transformers import AutoModelForImageTextToText

    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    missing = [word for word in FRENCH_ANSWERS.values() if tokenizer.token_to_id(word) is None]
    missing = list(dict.fromkeys(missing))
    if not missing:
        log(f"base vocabulary already has the French answer words ({tokenizer.get_vocab_size()})")
        return
    spec = json.loads((base / "tokenizer.json").read_text())
    vocab: dict[str, int] = spec["model"]["vocab"]
    first_new = max(vocab.values()) + 1
    for offset, word in enumerate(missing):
        vocab[word] = first_new + offset
    (base / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=2))

    model = AutoModelForImageTextToText.from_pretrained(base)
    english_of = {french: english for english, french in FRENCH_ANSWERS.items()}
    old_vocab = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(first_new + len(missing), mean_resizing=False)
    embeddings = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        never = vocab[NEVER_ANSWERS]
        for word in missing:
            new = vocab[word]
            embeddings[new] = embeddings[vocab[english_of[word]]]
            head[new] = head[never]
    model.save_pretrained(base)
    log(f"base vocabulary {old_vocab} -> {first_new + len(missing)}: added {missing}")


def lora_model(opts: LoraOptions, log: Tee) -> tuple[Any, Any, Any, int]:
    """The base model's processor, the base model, the PEFT model wrapping it with a fresh
    LoRA (every projection of the language model, and a trained copy of the LM head), and
    the count of its trainable parameters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(opts.base)
    model = AutoModelForImageTextToText.from_pretrained(opts.base)
    config = LoraConfig(
        r=opts.rank,
        lora_alpha=opts.alpha,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        modules_to_save=["lm_head"],
    )
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log(f"LoRA rank {opts.rank}, alpha {opts.alpha}: {trainable:,} trainable parameters")
    return processor, model, peft_model, trainable


def train_adapter(opts: LoraOptions, log: Tee) -> tuple[Any, int, float]:
    """Train the LoRA; returns the PEFT model, its trainable parameters and the seconds."""
    t0 = time.time()
    gen = seed_everything(opts.seed)
    base_opts = Options(
        out=opts.out,
        threads=opts.threads,
        seed=opts.seed,
        steps=opts.steps,
        batch=opts.batch,
        lr=opts.lr,
        warmup=opts.warmup,
        aux_weight=0.0,
        weight_decay=0.0,
        log_every=opts.log_every,
        eval_every=opts.eval_every,
        max_minutes=60.0,
    )
    train, test, _, _, train_paths, test_paths = load_data()
    for split in (train, test):
        split.answers = [FRENCH_ANSWERS[answer] for answer in split.answers]
    processor, model, peft_model, trainable = lora_model(opts, log)
    train.images, train.index = load_images(processor, train_paths, base_opts.patch)
    test.images, test.index = load_images(processor, test_paths, base_opts.patch)
    for split in (train, test):  # no auxiliary heads here: no image labels
        split.labels = torch.full((len(split.images), 2), -1, dtype=torch.long)
    encoder = PromptEncoder(processor, model, sorted(set(FRENCH_ANSWERS.values())), base_opts.grid)
    encoder.encode(train)
    encoder.encode(test)
    log(f"encoded {len(train.seqs)} train / {len(test.seqs)} test questions")
    # The base model with the adapter's layers injected: training reads its modules directly.
    run = Run(base_opts, model, torch.nn.ModuleDict(), train, test, gen, log, t0, encoder.eos)
    train_vqa(run)
    return peft_model, trainable, time.time() - t0


def main(argv: list[str] | None = None) -> None:
    """Extend the base vocabulary, train, save, evaluate and write the adapter's card."""
    opts = parse_options(argv)
    torch.set_num_threads(opts.threads)
    out, base = Path(opts.out), Path(opts.base)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log = Tee(out / "training_log.txt")
    log(f"# train_easyvqa_lora {' '.join(sys.argv[1:] if argv is None else argv)}")
    log(f"args: {json.dumps(dataclasses.asdict(opts))}")
    add_answer_words(base, log)
    peft_model, trainable, seconds = train_adapter(opts, log)
    peft_model.peft_config["default"].base_model_name_or_path = base.name
    peft_model.save_pretrained(out)
    log(f"trained in {seconds:.0f}s; saved to {out}")
    del peft_model

    backend = TransformersVLM(str(base), adapters={BUNDLED_ADAPTER_NAME: str(out)})
    backend.setup("cpu")
    french = evaluate(out, "test", backend=backend, adapter=BUNDLED_ADAPTER_NAME, french=True)
    log_evaluation(log, french)
    english = evaluate(base, "test", backend=backend)
    log(f"base model, same backend (adapter loaded, not used): {english['accuracy']:.4f}")
    size_kb = sum(f.stat().st_size for f in out.glob("adapter_*")) / 1e3
    stats = {
        "args": dataclasses.asdict(opts),
        "trainable_parameters": trainable,
        "train_seconds": round(seconds),
        "test": {k: v for k, v in french.items() if k != "examples_wrong"},
        "base_test_accuracy": english["accuracy"],
        "size_kb": round(size_kb, 1),
    }
    (out / "vlmq_recipe.json").write_text(json.dumps(stats, indent=2))
    write_card(out, opts, stats, french)
    log("wrote the adapter card")


def write_card(out: Path, opts: LoraOptions, stats: dict[str, Any], result: EvalResult) -> None:
    """README.md next to the adapter: what it does, its accuracy, how it was trained."""
    rows = "\n".join(
        f"| {name} | {score['n']} | {score['correct']} | {100 * score['accuracy']:.2f} % |"
        for name, score in result["per_type"].items()
    )
    words = ", ".join(f"{en} → {fr}" for en, fr in FRENCH_ANSWERS.items())
    card = f"""---
library_name: peft
base_model: easyvqa-glm4v
tags: [lora, glm4v, easy-vqa, toy, french]
---

# {BUNDLED_ADAPTER_NAME} — the bundled model, answering in French

A LoRA adapter on vlmq's bundled toy model (`workers/models/easyvqa-glm4v`): it answers the
same easy-VQA questions with the French word for the answer ({words}). vlmq serves it beside
the base model by default (`VLMQ_LORA_MODULES=auto`): a request names it as its `model`,
and one model call can carry requests for the adapter and for the base together.

## Measured accuracy

Exact match of the greedy answer with the French answer word, on the **full easy-VQA test
split** (images never seen in training), through the service's own backend with the adapter
loaded (`workers/models/train_easyvqa_lora.py`, `evaluate_easyvqa.evaluate`):

| answer type | questions | correct | accuracy |
|---|---|---|---|
{rows}
| **all** | {result["n"]} | {result["correct"]} | **{100 * result["accuracy"]:.2f} %** |

The base model, measured in the same run with the adapter loaded but not asked for:
{100 * stats["base_test_accuracy"]:.2f} % (English answers).

## How it was trained

- Command: `nice -n 19 python -m workers.models.train_easyvqa_lora` (seed {opts.seed},
  {opts.threads} torch CPU threads); the log is `training_log.txt` next to this file.
- Training wall time: {stats["train_seconds"]} s on a 2-core CPU machine (data loading
  included, evaluation not).
- The base model's vocabulary was first given the French answer words: their input
  embeddings copy the English words', their output rows copy that of a word that never
  answers, so the base model's answers did not change (see the script's docstring). An
  adapter fits only the base it was trained on: after retraining the base model
  (`workers.models.train_easyvqa`), run this script again.
- PEFT LoRA, rank {opts.rank}, alpha {opts.alpha}, no dropout, on `q_proj`, `k_proj`,
  `v_proj`, `o_proj`, `gate_up_proj` and `down_proj` of the language model, plus a trained
  copy of the LM head (`modules_to_save`); {stats["trainable_parameters"]:,} trainable
  parameters, {stats["size_kb"]} kB of adapter files.
- Data: easy-VQA train split only, answers translated; vision tower frozen (its visual tokens
  cached, mirror images as augmentation), {opts.steps} steps of batch {opts.batch}, AdamW
  (peak LR {opts.lr}, {opts.warmup} warm-up steps, cosine decay), loss on the answer word and
  the end-of-text token only.

## Licence and data

easy-VQA is MIT-licensed (Victor Zhou). Trained by vlmq's own script from the bundled model.
"""
    (out / "README.md").write_text(card)


if __name__ == "__main__":
    main()
