"""Train `easyvqa-glm4v-json`: a LoRA adapter on the bundled model that answers in JSON.

    nice -n 19 python -m workers.models.train_easyvqa_json

vlmq serves it by default for the bundled model's JSON requests (`response_format`
`json_schema` / `json_object`; `VLMQ_JSON_ADAPTER=auto`). Recipe (see the README.md this
writes next to the adapter):

1. `add_spelling`: the base model's vocabulary gets every printable ASCII character it
   lacks, and decodes by concatenation (`glm4v_builder.spelling_vocabulary`), so a grammar
   can spell any JSON. The new tokens' input embeddings copy `[UNK]`'s (a prompt with such
   characters reads exactly as it did, when they were unknown), their output rows copy a
   word that never answers ("what"), in the base and in the French adapter's head alike, so
   the plain answers stay exactly what they were. Run once; a second run changes nothing.
2. A PEFT LoRA (rank 8) on every projection of the language model and a trained copy of the
   LM head, trained like the French adapter: vision tower frozen, each easy-VQA training
   question formatted as the service formats a job, the answer a compact JSON object of the
   image's colour and shape (`{"color":"red","shape":"circle"}`, or one of them, in either
   order: the grammar forces the keys, the model must fill in what follows each), loss on
   every answer token and the end of text.
3. Measure, on the held-out test images, through the service's own backend with the schema
   constrained: how many answers parse and validate, and how often each field is right,
   against the plain answers to the same questions.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from services.core.config import (
    BUNDLED_ADAPTER_DIR,
    BUNDLED_ADAPTER_NAME,
    JSON_ADAPTER_NAME,
)
from services.core.inputs.grammars import Grammar
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import PredictRequest
from workers.backends.grammar import SpelledTokens
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import conversation
from workers.models.glm4v_builder import spelling_vocabulary
from workers.models.train_easyvqa import (
    SHAPES,
    Options,
    PromptEncoder,
    Run,
    Split,
    Tee,
    collate,
    freeze_and_cache_vision,
    label_tensor,
    load_data,
    load_images,
    lr_at,
    seed_everything,
    set_lr,
    vqa_optimizer,
)
from workers.models.train_easyvqa_lora import (
    NEVER_ANSWERS,
    LoraOptions,
    lora_model,
    options_from,
)

# The layouts of the training answers: which fields, in which order.
LAYOUTS = (("color", "shape"), ("shape", "color"), ("color",), ("shape",))
# The questions the evaluation asks of each test image, plainly and under the schema.
EVAL_QUESTIONS = {"color": "what color is the shape?", "shape": "what shape is in the image?"}


@dataclasses.dataclass(frozen=True)
class JsonOptions(LoraOptions):
    """The command-line options of the adapter's training (the French adapter's, but for
    where it goes and how long it trains)."""

    out: str = f"workers/models/{JSON_ADAPTER_NAME}"
    steps: int = 500


def answer_schema(colours: list[str]) -> dict[str, Any]:
    """The strict schema of the evaluation: the image's colour and shape, both required."""
    return {
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": colours},
            "shape": {"type": "string", "enum": list(SHAPES)},
        },
        "required": ["color", "shape"],
        "additionalProperties": False,
    }


def add_spelling(base: Path, adapters: list[Path], log: Tee) -> None:
    """Give the base model (and the adapters' copies of its head) the spelling vocabulary
    (step 1 of the module docstring)."""
    from transformers import AutoModelForImageTextToText

    spec = json.loads((base / "tokenizer.json").read_text())
    old_size = max(spec["model"]["vocab"].values()) + 1
    spec = spelling_vocabulary(spec)
    vocab: dict[str, int] = spec["model"]["vocab"]
    new_size = max(vocab.values()) + 1
    model = AutoModelForImageTextToText.from_pretrained(base)
    if model.get_input_embeddings().weight.shape[0] == new_size:
        log(f"base vocabulary already spells JSON ({new_size} tokens)")
        return
    (base / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=2))
    model.resize_token_embeddings(new_size, mean_resizing=False)
    embeddings = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        embeddings[old_size:] = embeddings[vocab["[UNK]"]]
        head[old_size:] = head[vocab[NEVER_ANSWERS]]
    model.save_pretrained(base)
    for adapter in adapters:
        path = adapter / "adapter_model.safetensors"
        tensors = load_file(path)
        for name, weight in tensors.items():
            if name.endswith("lm_head.weight") and weight.shape[0] == old_size:
                rows = weight[vocab[NEVER_ANSWERS]].expand(new_size - old_size, -1)
                tensors[name] = torch.cat([weight, rows]).contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
    log(f"base vocabulary {old_size} -> {new_size}: printable ASCII added, decoder Fuse")


def spell(text: str, vocab: dict[str, int]) -> list[int]:
    """`text` as tokens, longest match first (whole words where the vocabulary has them),
    as the grammar's own tokenizer spells it (`SpelledTokens`)."""
    tokens = [b""] * (max(vocab.values()) + 1)
    for word, token in vocab.items():
        tokens[token] = word.encode()
    return SpelledTokens(tokens, stop_ids=[0], special_token_ids=[])(text.encode())


def json_answer(fields: tuple[str, ...], shape: str, colour: str) -> str:
    """The compact JSON answer with these fields, in this order."""
    values = {"color": colour, "shape": shape}
    return json.dumps({name: values[name] for name in fields}, separators=(",", ":"))


def encode_json_split(
    split: Split, encoder: PromptEncoder, vocab: dict[str, int], colours: tuple[str, ...]
) -> list[int]:
    """Fill the split's sequences (prompt + JSON answer + end of text) for the questions
    about images whose colour and shape are known; returns each sequence's answer length."""
    keep, lengths, seqs = [], [], []
    for index, (question, image) in enumerate(zip(split.questions, split.image_ids, strict=True)):
        shape, colour = split.labels[split.index[image]].tolist()
        if shape < 0 or colour < 0:
            continue
        answer = json_answer(LAYOUTS[index % len(LAYOUTS)], SHAPES[shape], colours[colour])
        target = [*spell(answer, vocab), encoder.eos]
        seqs.append(torch.cat([encoder.prompt_ids(question), torch.tensor(target)]))
        lengths.append(len(target))
        keep.append(index)
    split.questions = [split.questions[i] for i in keep]
    split.answers = [split.answers[i] for i in keep]
    split.image_ids = [split.image_ids[i] for i in keep]
    split.seqs = seqs
    image_token = encoder.model.config.image_token_id
    split.positions = []
    for seq in seqs:
        mm = (seq == image_token).long()[None]
        positions, _ = encoder.model.model.get_rope_index(
            seq[None], mm_token_type_ids=mm, image_grid_thw=encoder.grid
        )
        split.positions.append(positions[:, 0])
    split.image_of = torch.tensor([split.index[i] for i in split.image_ids])
    return lengths


def json_loss(run: Run, idx: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy over each row's answer tokens (left padding aligns their ends), and the
    share of rows whose every answer token was the argmax."""
    model, split = run.model, run.train
    hidden = run.opts.text_hidden
    ids, att, pos = collate(split, idx, run.eos)
    rows = split.image_of[idx]
    feats = run.cached["train"][rows]
    flip = torch.rand(len(idx), generator=run.gen) < 0.5
    feats = torch.where(flip[:, None, None], run.cached["train-flip"][rows], feats)
    embedded = model.model.get_input_embeddings()(ids)
    embedded = embedded.masked_scatter(
        (ids == model.config.image_token_id)[..., None], feats.reshape(-1, hidden)
    )
    out = model.model.language_model(inputs_embeds=embedded, attention_mask=att, position_ids=pos)
    width = int(lengths.max())
    logits = model.lm_head(out.last_hidden_state[:, -width - 1 : -1])
    targets = ids[:, -width:]
    scored = torch.arange(width)[None, :] >= (width - lengths)[:, None]
    loss = F.cross_entropy(logits[scored], targets[scored])
    right = ((logits.argmax(-1) == targets) | ~scored).all(-1).float().mean()
    return loss, float(right)


def train_adapter(opts: JsonOptions, log: Tee) -> tuple[Any, int, float]:
    """Train the LoRA; returns the PEFT model, its trainable parameters and the seconds."""
    t0 = time.time()
    gen = seed_everything(opts.seed)
    base_opts = Options(out=opts.out, threads=opts.threads, seed=opts.seed, weight_decay=0.0)
    train, test, _, colours, train_paths, test_paths = load_data()
    processor, model, peft_model, trainable = lora_model(opts, log)
    train.images, train.index = load_images(processor, train_paths, base_opts.patch)
    test.images, test.index = load_images(processor, test_paths, base_opts.patch)
    train.labels = label_tensor(train, colours)
    test.labels = label_tensor(test, colours)
    encoder = PromptEncoder(processor, model, [], base_opts.grid)
    vocab = processor.tokenizer.get_vocab()
    lengths = torch.tensor(encode_json_split(train, encoder, vocab, colours))
    log(f"encoded {len(train.seqs)} training questions with JSON answers")
    run = Run(base_opts, model, torch.nn.ModuleDict(), train, test, gen, log, t0, encoder.eos)
    freeze_and_cache_vision(run)
    opt, params = vqa_optimizer(run)
    order, cursor = torch.randperm(len(train.seqs), generator=gen), 0
    running_loss, running_right = 0.0, 0.0
    for step in range(opts.steps):
        set_lr(opt, lr_at(step, opts.steps, opts.warmup, opts.lr))
        if cursor + opts.batch > len(order):
            order, cursor = torch.randperm(len(train.seqs), generator=gen), 0
        idx = order[cursor : cursor + opts.batch]
        cursor += opts.batch
        loss, right = json_loss(run, idx, lengths[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running_loss = 0.95 * running_loss + 0.05 * loss.item() if step else loss.item()
        running_right = 0.95 * running_right + 0.05 * right if step else right
        if (step + 1) % opts.log_every == 0:
            log(
                f"[json] step {step + 1}/{opts.steps} loss {running_loss:.4f} "
                f"answers-right {running_right:.4f} elapsed {time.time() - t0:.0f}s"
            )
    return peft_model, trainable, time.time() - t0


def test_images(limit: int | None = None) -> list[tuple[str, str, str]]:
    """(path, colour, shape) of each held-out test image whose colour and shape are known."""
    from easy_vqa import get_test_image_paths

    _, test, _, colours, _, _ = load_data()
    images = sorted(set(test.image_ids))
    test.index = {image: row for row, image in enumerate(images)}
    labels = label_tensor(test, colours)
    paths = get_test_image_paths()
    known = []
    for image in images:
        shape, colour = labels[test.index[image]].tolist()
        if shape >= 0 and colour >= 0:
            known.append((paths[image], colours[colour], SHAPES[shape]))
    return known[:limit]


def evaluate_json(
    backend: TransformersVLM, images: list[tuple[str, str, str]], colours: list[str]
) -> dict[str, Any]:
    """Ask each image both questions plainly and under the strict schema (what a worker
    would run for a job); count the plain answers right, the JSON answers that parse and
    validate, and each JSON field right."""
    import jsonschema_rs

    schema = answer_schema(colours)
    validator = jsonschema_rs.validator_for(schema)
    grammar = Grammar(kind="json_schema", value=json.dumps(schema, separators=(",", ":")))
    plain = GenerationParams(max_tokens=8)
    constrained = GenerationParams(max_tokens=64, grammar=grammar)
    counts = {"plain_color": 0, "plain_shape": 0, "valid": 0, "json_color": 0, "json_shape": 0}
    asked = 0
    start = time.time()
    for lo in range(0, len(images), 128):
        chunk = images[lo : lo + 128]
        requests, truths = [], []
        for path, colour, shape in chunk:
            image = to_rgb(Path(path).read_bytes())
            for field, question in EVAL_QUESTIONS.items():
                messages = conversation(image, question)
                requests.append(PredictRequest(messages, plain))
                requests.append(PredictRequest(messages, constrained, adapter=JSON_ADAPTER_NAME))
                truths.append((field, colour, shape))
        predictions = backend.predict(requests)
        for (field, colour, shape), plain_answer, json_answer_ in zip(
            truths, predictions[0::2], predictions[1::2], strict=True
        ):
            asked += 1
            counts[f"plain_{field}"] += (
                plain_answer.answer == {"color": colour, "shape": shape}[field]
            )
            try:
                value = json.loads(json_answer_.answer)
            except ValueError:
                continue
            if not validator.is_valid(value):
                continue
            counts["valid"] += 1
            counts["json_color"] += value["color"] == colour
            counts["json_shape"] += value["shape"] == shape
    per_field = asked // 2
    return {
        "images": len(images),
        "json_answers": asked,
        "valid": counts["valid"] / asked,
        "plain": {
            "color": counts["plain_color"] / per_field,
            "shape": counts["plain_shape"] / per_field,
        },
        "json": {"color": counts["json_color"] / asked, "shape": counts["json_shape"] / asked},
        "seconds": round(time.time() - start, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Extend the vocabulary, train, save, evaluate and write the adapter's card."""
    opts = options_from(argv, JsonOptions, "Train the JSON LoRA of the bundled model.")
    torch.set_num_threads(opts.threads)
    out, base = Path(opts.out), Path(opts.base)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log = Tee(out / "training_log.txt")
    log(f"# train_easyvqa_json {' '.join(sys.argv[1:] if argv is None else argv)}")
    log(f"args: {json.dumps(dataclasses.asdict(opts))}")
    add_spelling(base, [BUNDLED_ADAPTER_DIR], log)
    peft_model, trainable, seconds = train_adapter(opts, log)
    peft_model.peft_config["default"].base_model_name_or_path = base.name
    peft_model.save_pretrained(out)
    log(f"trained in {seconds:.0f}s; saved to {out}")
    del peft_model

    backend = TransformersVLM(
        str(base),
        adapters={JSON_ADAPTER_NAME: str(out), BUNDLED_ADAPTER_NAME: str(BUNDLED_ADAPTER_DIR)},
    )
    backend.setup("cpu")
    _, _, _, colours, _, _ = load_data()
    result = evaluate_json(backend, test_images(), list(colours))
    log(f"evaluation: {json.dumps(result)}")
    size_kb = sum(f.stat().st_size for f in out.glob("adapter_*")) / 1e3
    stats = {
        "args": dataclasses.asdict(opts),
        "trainable_parameters": trainable,
        "train_seconds": round(seconds),
        "test": result,
        "size_kb": round(size_kb, 1),
    }
    (out / "vlmq_recipe.json").write_text(json.dumps(stats, indent=2))
    write_card(out, opts, stats)
    log("wrote the adapter card")


def write_card(out: Path, opts: JsonOptions, stats: dict[str, Any]) -> None:
    """README.md next to the adapter: what it does, its accuracy, how it was trained."""
    result = stats["test"]
    rows = "\n".join(
        f"| {label} | {result['json_answers']} | {100 * result[key]['color']:.2f} % "
        f"| {100 * result[key]['shape']:.2f} % |"
        for label, key in (
            ("plain answer (base model)", "plain"),
            ("JSON answer (this adapter, constrained)", "json"),
        )
    )
    card = f"""---
library_name: peft
base_model: easyvqa-glm4v
tags: [lora, glm4v, easy-vqa, toy, json, structured-output]
---

# {JSON_ADAPTER_NAME} — the bundled model, answering in JSON

A LoRA adapter on vlmq's bundled toy model (`workers/models/easyvqa-glm4v`): asked about an
easy-VQA image under a JSON schema with `color` and `shape` fields, it fills them in with the
image's colour and shape. vlmq serves it by default for the bundled model's JSON requests
(`response_format` of type `json_schema` or `json_object`, `VLMQ_JSON_ADAPTER=auto`), and
constrains decoding to the schema, so every answer parses and validates.

## Measured accuracy

On the **{result["images"]} held-out easy-VQA test images** whose colour and shape are known,
each asked "{EVAL_QUESTIONS["color"]}" and "{EVAL_QUESTIONS["shape"]}", once plainly
(the base model) and once under the strict schema `{{"color": enum, "shape": enum}}` (this
adapter), through the service's own backend (`workers/models/train_easyvqa_json.py`):

| | answers | color right | shape right |
|---|---|---|---|
{rows}

{100 * result["valid"]:.2f} % of the JSON answers parse and validate against the schema.
The plain rows count the colour question's answers for colour and the shape question's for
shape; the JSON rows count both fields of the answers to both questions.

## How it was trained

- Command: `nice -n 19 python -m workers.models.train_easyvqa_json` (seed {opts.seed},
  {opts.threads} torch CPU threads); the log is `training_log.txt` next to this file.
- Training wall time: {stats["train_seconds"]} s on a 2-core CPU machine.
- The base model's vocabulary was first given every printable ASCII character, and decodes
  by concatenation, so a grammar can spell any JSON; the new tokens read like `[UNK]` in a
  prompt and never win a plain answer, so the base model's answers did not change.
- PEFT LoRA, rank {opts.rank}, alpha {opts.alpha}, on every projection of the language
  model, plus a trained copy of the LM head; {stats["trainable_parameters"]:,} trainable
  parameters, {stats["size_kb"]} kB of adapter files.
- Data: easy-VQA train split only, every question about an image whose colour and shape are
  known, the answer a compact JSON object of both (either order) or of one of them; vision
  tower frozen, {opts.steps} steps of batch {opts.batch}, AdamW (peak LR {opts.lr}, cosine
  decay), loss on every answer token and the end-of-text token.

## Licence and data

easy-VQA is MIT-licensed (Victor Zhou). Trained by vlmq's own script from the bundled model.
"""
    (out / "README.md").write_text(card)


if __name__ == "__main__":
    main()
