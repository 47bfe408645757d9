"""Train the bundled GLM-4V model on easy-VQA on the CPU and save it in the Hugging Face format.

    nice -n 19 python -m workers.models.train_easyvqa --out workers/models/easyvqa-glm4v

Recipe (see the README.md this writes next to the checkpoint):

1. Build a small random-weight `Glm4vForConditionalGeneration` with `build_glm4v`: word-level
   tokenizer over the words of all easy-VQA questions and answers, vision patch 8 with a 2x2
   merge, and image-processor pixel limits that resize every image to 64x64 pixels
   (8x8 patches -> 16 visual tokens), whatever its size.
2. Derive each training image's shape and colour from the training questions and answers
   ("what shape is in the image?" -> circle, "is there not a red shape?" -> no -> red, ...).
3. Pre-train the vision tower alone with two auxiliary linear heads on its max-pooled
   (merged, LM-space) output that classify shape and colour, with random horizontal flips.
4. Freeze the vision tower, cache its visual tokens for every image (and its mirror image),
   and train the language model on the VQA pairs, formatted exactly as the service formats a
   job (chat template, generation prompt, thinking off), with loss on the answer word and the
   end-of-text token only. AdamW, linear warm-up then cosine decay. The auxiliary heads are
   dropped when saving (`--joint` trains vision and LM together instead, keeping the heads).
5. Save, then measure exact-match accuracy on the full test split through the service's own
   backend, `TransformersVLM` (`evaluate_easyvqa.evaluate`).

Every random draw comes from the seeded global RNGs or one seeded `torch.Generator`, in a
fixed order; keep that order when editing, or a rerun no longer reproduces the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from workers.models.evaluate_easyvqa import EvalResult, answer_type, conversation, evaluate
from workers.models.glm4v_builder import Glm4vRecipe, TextSize, VisionSize, build_glm4v, split_words

SHAPES = ("circle", "rectangle", "triangle")
IMAGE_SIDE = 64  # easy-VQA images are 64x64; every image is resized to this many pixels
MERGE = 2  # the vision tower's spatial merge: 2x2 patches make one visual token
CHUNK = 500  # images per vision-tower call outside training

# `Any` where transformers objects are meant: mypy treats transformers as untyped.
Model = Any
Processor = Any


@dataclass(frozen=True)
class Options:
    """The command-line options (field order is the order they are logged and saved in)."""

    out: str = "workers/models/easyvqa-glm4v"
    threads: int = 2
    seed: int = 0
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    vision_hidden: int = 64
    vision_depth: int = 2
    patch: int = 8
    vision_steps: int = 1500
    vision_batch: int = 128
    vision_lr: float = 3e-3
    augment: str = "hflip"
    freeze_vision: bool = True
    steps: int = 5000
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 150
    aux_weight: float = 0.3
    weight_decay: float = 0.01
    max_minutes: float = 38.0
    log_every: int = 100
    eval_every: int = 1000
    eval_limit: int | None = None

    @property
    def grid(self) -> torch.Tensor:
        """`image_grid_thw` of one image: one frame of (side / patch)^2 patches."""
        return torch.tensor([[1, IMAGE_SIDE // self.patch, IMAGE_SIDE // self.patch]])

    @property
    def n_visual(self) -> int:
        """Visual tokens per image, after the spatial merge."""
        return (IMAGE_SIDE // self.patch // MERGE) ** 2


@dataclass
class Split:
    """One easy-VQA split, encoded for training: images, their labels and the token ids."""

    name: str
    questions: list[str]
    answers: list[str]
    image_ids: list[int]
    images: torch.Tensor  # (images, 3, 64, 64), normalised as the image processor does
    index: dict[int, int]  # easy-VQA image id -> row of `images`
    labels: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (images, 2)
    seqs: list[torch.Tensor] = field(default_factory=list)  # prompt + answer + eos
    positions: list[torch.Tensor] = field(default_factory=list)  # (3, len) rope positions
    image_of: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # question -> row


@dataclass
class Run:
    """What the training phases share: options, model, auxiliary heads, data, RNG, log."""

    opts: Options
    model: Model
    heads: torch.nn.ModuleDict
    train: Split
    test: Split
    gen: torch.Generator
    log: Tee
    t0: float
    eos: int
    # Frozen vision tower's visual tokens: "train", "train-flip" (mirror images), "test".
    cached: dict[str, torch.Tensor] = field(default_factory=dict)


class TrainStats(TypedDict):
    """What the run measured, saved in vlmq_recipe.json and quoted by the model card."""

    parameters: int
    vision_steps: int
    steps: int
    train_seconds: int
    threads: int
    test: dict[str, Any]
    size_mb: float
    vision_test: list[float]


class Tee:
    """Print to stdout and append to a log file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, *parts: object) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        with self.path.open("a") as file:
            file.write(line + "\n")


def parse_options(argv: list[str] | None = None) -> Options:
    """Options from the command line (defaults are the recipe of the bundled checkpoint)."""
    d = Options()
    p = argparse.ArgumentParser(description="Train the bundled easy-VQA GLM-4V model on the CPU.")
    p.add_argument("--out", default=d.out)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--text-hidden", type=int, default=d.text_hidden)
    p.add_argument("--text-layers", type=int, default=d.text_layers)
    p.add_argument("--text-heads", type=int, default=d.text_heads)
    p.add_argument("--vision-hidden", type=int, default=d.vision_hidden)
    p.add_argument("--vision-depth", type=int, default=d.vision_depth)
    p.add_argument("--patch", type=int, default=d.patch)
    p.add_argument("--vision-steps", type=int, default=d.vision_steps)
    p.add_argument("--vision-batch", type=int, default=d.vision_batch)
    p.add_argument("--vision-lr", type=float, default=d.vision_lr)
    p.add_argument("--augment", choices=["none", "hflip", "dihedral"], default=d.augment)
    p.add_argument(
        "--joint",
        dest="freeze_vision",
        action="store_false",
        help="phase 2 trains vision tower and LM together "
        "(default: vision frozen, LM on cached features)",
    )
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--aux-weight", type=float, default=d.aux_weight)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=d.max_minutes,
        help="stop training (not eval) after this",
    )
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument(
        "--eval-limit", type=int, default=d.eval_limit, help="final test eval on the first N only"
    )
    return Options(**vars(p.parse_args(argv)))


# ---- images, labels, augmentation, learning rate


def colours_of(answers: list[str]) -> tuple[str, ...]:
    """The colour words among easy-VQA's answers, sorted."""
    return tuple(sorted(a for a in answers if a not in SHAPES and a not in ("yes", "no")))


def derive_image_labels(
    questions: list[str], answers: list[str], image_ids: list[int], colours: tuple[str, ...]
) -> dict[int, tuple[int, int]]:
    """Shape and colour index of each image, read off its questions (-1 where undetermined)."""
    cand: dict[int, tuple[set[str], set[str]]] = {}
    for q, a, i in zip(questions, answers, image_ids, strict=True):
        shapes, cols = cand.setdefault(i, (set(SHAPES), set(colours)))
        words = split_words(q)
        q_shapes = [w for w in words if w in SHAPES]
        q_cols = [w for w in words if w in colours]
        if a in SHAPES:
            shapes &= {a}
            for c in q_cols:
                cols &= {c}
        elif a in colours:
            cols &= {a}
            for s in q_shapes:
                shapes &= {s}
        else:  # yes / no about one attribute, possibly negated
            truth = (a == "yes") != ("not" in words or "no" in words)
            attrs = [(shapes, s) for s in q_shapes] + [(cols, c) for c in q_cols]
            if truth:
                for pool, x in attrs:
                    pool &= {x}
            elif len(attrs) == 1:
                attrs[0][0].discard(attrs[0][1])
    labels = {}
    for i, (shapes, cols) in cand.items():
        shape = SHAPES.index(next(iter(shapes))) if len(shapes) == 1 else -1
        colour = colours.index(next(iter(cols))) if len(cols) == 1 else -1
        labels[i] = (shape, colour)
    return labels


def label_tensor(split: Split, colours: tuple[str, ...]) -> torch.Tensor:
    """(images, 2) shape and colour index of each image of the split, -1 where unknown."""
    labels = derive_image_labels(split.questions, split.answers, split.image_ids, colours)
    lab = torch.full((len(split.index), 2), -1, dtype=torch.long)
    for i, (s, c) in labels.items():
        lab[split.index[i]] = torch.tensor([s, c])
    return lab


def patchify(images: torch.Tensor, patch: int, merge: int, temporal: int = 2) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B * patches, 3 * temporal * patch^2).

    The layout of Glm4vImageProcessor's `pixel_values`.
    """
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7).unsqueeze(6)
    x = x.expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)
    return x.reshape(b * gh * gw, c * temporal * patch * patch)


def unpatchify(
    pixel_values: torch.Tensor, n: int, side: int, patch: int, merge: int
) -> torch.Tensor:
    """Inverse of `patchify` for n square images (temporal copies dropped)."""
    g = side // patch
    x = pixel_values.reshape(n, g // merge, g // merge, merge, merge, 3, 2, patch, patch)[
        :, :, :, :, :, :, 0
    ]
    # (n, gh/m, gw/m, m, m, C, p, p) -> (n, C, gh/m, m, p, gw/m, m, p)
    x = x.permute(0, 5, 1, 3, 6, 2, 4, 7)
    return x.reshape(n, 3, side, side).contiguous()


def load_images(
    processor: Processor, paths: dict[int, str], patch: int
) -> tuple[torch.Tensor, dict[int, int]]:
    """Images processed once by the checkpoint's own image processor, kept as 64x64 tensors."""
    ids = sorted(paths)
    pil = []
    for i in ids:
        with Image.open(paths[i]) as im:
            pil.append(im.convert("RGB"))
    feats = processor.image_processor(images=pil, return_tensors="pt")
    grid = feats["image_grid_thw"]
    assert (grid == torch.tensor([1, IMAGE_SIDE // patch, IMAGE_SIDE // patch])).all(), grid[:3]
    pv = feats["pixel_values"]
    imgs = unpatchify(pv, len(ids), IMAGE_SIDE, patch, MERGE)
    assert torch.equal(patchify(imgs, patch, MERGE), pv), "patchify mismatch"
    return imgs, {i: k for k, i in enumerate(ids)}


def hflip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip per image (easy-VQA triangles stand upright, so only this flip)."""
    k = torch.rand(images.shape[0], generator=gen) < 0.5
    out = images.clone()
    out[k] = images[k].flip(-1)
    return out


def dihedral(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flip + 90-degree rotation per image (shape and colour labels are invariant)."""
    k = torch.randint(0, 8, (images.shape[0],), generator=gen)
    out = images.clone()
    for t in range(1, 8):
        sel = (k == t).nonzero().flatten()
        if len(sel) == 0:
            continue
        x = images[sel]
        if t >= 4:
            x = x.flip(-1)
        out[sel] = torch.rot90(x, t % 4, dims=(-2, -1))
    return out


def augment(images: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Apply the `--augment` transformation (`none`, `hflip` or `dihedral`)."""
    if kind == "hflip":
        return hflip(images, gen)
    if kind == "dihedral":
        return dihedral(images, gen)
    return images


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float = 0.03) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor * peak`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in opt.param_groups:
        group["lr"] = lr


# ---- model and token ids


def make_recipe(opts: Options, words: list[str]) -> Glm4vRecipe:
    """The architecture the options describe, for `build_glm4v`."""
    pixels = 2 * IMAGE_SIDE * IMAGE_SIDE  # smart_resize counts both temporal copies
    return Glm4vRecipe(
        words=words,
        text=TextSize(
            hidden_size=opts.text_hidden,
            intermediate_size=3 * opts.text_hidden,
            num_hidden_layers=opts.text_layers,
            num_attention_heads=opts.text_heads,
            num_key_value_heads=max(1, opts.text_heads // 2),
        ),
        vision=VisionSize(
            hidden_size=opts.vision_hidden,
            intermediate_size=2 * opts.vision_hidden,
            depth=opts.vision_depth,
            num_heads=max(1, opts.vision_hidden // 32),
            patch_size=opts.patch,
            spatial_merge_size=MERGE,
            min_pixels=pixels,
            max_pixels=pixels,
        ),
        seed=opts.seed,
    )


class PromptEncoder:
    """Token ids exactly as the service's chat template produces them, + answer + eos."""

    def __init__(
        self, processor: Processor, model: Model, answers: list[str], grid: torch.Tensor
    ) -> None:
        tok = processor.tokenizer
        self.processor = processor
        self.model = model
        self.grid = grid
        self.eos: int = tok.convert_tokens_to_ids("<|endoftext|>")
        self.answer_id: dict[str, int] = {a: tok.convert_tokens_to_ids(a) for a in answers}
        assert all(tok.convert_ids_to_tokens(v) == a for a, v in self.answer_id.items())
        self.dummy = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE))
        self.prompts: dict[str, torch.Tensor] = {}

    def prompt_ids(self, question: str) -> torch.Tensor:
        """The prompt of a question (cached: easy-VQA has ~100 distinct questions)."""
        if question not in self.prompts:
            enc = self.processor.apply_chat_template(
                conversation(self.dummy, question),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                enable_thinking=False,
            )
            self.prompts[question] = enc["input_ids"][0]
        return self.prompts[question]

    def encode(self, split: Split) -> None:
        """Fill the split's token ids and 3-D rope positions, one sequence per question."""
        split.seqs = [
            torch.cat([self.prompt_ids(q), torch.tensor([self.answer_id[a], self.eos])])
            for q, a in zip(split.questions, split.answers, strict=True)
        ]
        image_token = self.model.config.image_token_id
        split.positions = []
        for s in split.seqs:
            mm = (s == image_token).long()[None]
            pid, _ = self.model.model.get_rope_index(
                s[None], mm_token_type_ids=mm, image_grid_thw=self.grid
            )
            split.positions.append(pid[:, 0])
        split.image_of = torch.tensor([split.index[i] for i in split.image_ids])


def collate(
    split: Split, idx: torch.Tensor, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded input ids, attention mask and (3, B, L) positions of questions `idx`."""
    length = max(len(split.seqs[j]) for j in idx)
    ids = torch.full((len(idx), length), pad, dtype=torch.long)
    att = torch.zeros((len(idx), length), dtype=torch.long)
    pos = torch.zeros((3, len(idx), length), dtype=torch.long)
    for r, j in enumerate(idx.tolist()):
        n = len(split.seqs[j])
        ids[r, length - n :] = split.seqs[j]
        att[r, length - n :] = 1
        pos[:, r, length - n :] = split.positions[j]
    return ids, att, pos


# ---- auxiliary heads and the vision tower


def make_aux_heads(hidden: int, n_colours: int) -> torch.nn.ModuleDict:
    """Linear shape and colour classifiers over the max-pooled visual tokens."""
    return torch.nn.ModuleDict(
        {
            "shape": torch.nn.Linear(hidden, len(SHAPES)),
            "colour": torch.nn.Linear(hidden, n_colours),
        }
    )


def aux_loss(
    run: Run, pooled_tokens: torch.Tensor, lab: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape + colour cross-entropy (unknown labels ignored) and both predictions."""
    hidden = run.opts.text_hidden
    pooled = pooled_tokens.view(lab.shape[0], run.opts.n_visual, hidden).max(1).values
    ls = run.heads["shape"](pooled)
    lc = run.heads["colour"](pooled)
    loss = F.cross_entropy(ls, lab[:, 0], ignore_index=-1) + F.cross_entropy(
        lc, lab[:, 1], ignore_index=-1
    )
    return loss, ls.argmax(-1), lc.argmax(-1)


def visual_tokens(run: Run, images: torch.Tensor) -> torch.Tensor:
    """The vision tower's merged output tokens, (images * n_visual, text hidden)."""
    out = run.model.model.visual(
        patchify(images, run.opts.patch, MERGE), grid_thw=run.opts.grid.repeat(len(images), 1)
    )
    tokens: torch.Tensor = out.pooler_output
    return tokens


def vision_test_accuracy(run: Run) -> tuple[float, float]:
    """Shape and colour accuracy of the auxiliary heads on the test images with a label."""
    test = run.test
    run.model.eval()
    with torch.no_grad():
        ss, cs = [], []
        for lo in range(0, len(test.images), CHUNK):
            v = visual_tokens(run, test.images[lo : lo + CHUNK])
            _, s, c = aux_loss(run, v, test.labels[lo : lo + CHUNK])
            ss.append(s)
            cs.append(c)
    s, c = torch.cat(ss), torch.cat(cs)
    ms, mc = test.labels[:, 0] >= 0, test.labels[:, 1] >= 0
    run.model.train()
    return float((s[ms] == test.labels[ms, 0]).float().mean()), float(
        (c[mc] == test.labels[mc, 1]).float().mean()
    )


def pretrain_vision(run: Run) -> None:
    """Phase 1: the vision tower and the auxiliary heads alone, on augmented images."""
    opts, train = run.opts, run.train
    run.model.train()
    vis_params = list(run.model.model.visual.parameters()) + list(run.heads.parameters())
    opt = torch.optim.AdamW(
        vis_params, lr=opts.vision_lr, weight_decay=opts.weight_decay, betas=(0.9, 0.98)
    )
    t1 = time.time()
    run_loss, run_s, run_c = 0.0, 0.0, 0.0
    for step in range(opts.vision_steps):
        set_lr(opt, lr_at(step, opts.vision_steps, 50, opts.vision_lr))
        idx = torch.randint(0, len(train.images), (opts.vision_batch,), generator=run.gen)
        x = augment(train.images[idx], opts.augment, run.gen)
        lab = train.labels[idx]
        loss, s, c = aux_loss(run, visual_tokens(run, x), lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vis_params, 1.0)
        opt.step()
        run_loss = 0.95 * run_loss + 0.05 * loss.item() if step else loss.item()
        ms, mc = lab[:, 0] >= 0, lab[:, 1] >= 0
        run_s = 0.95 * run_s + 0.05 * float((s[ms] == lab[ms, 0]).float().mean())
        run_c = 0.95 * run_c + 0.05 * float((c[mc] == lab[mc, 1]).float().mean())
        if (step + 1) % opts.log_every == 0 or step + 1 == opts.vision_steps:
            run.log(
                f"[vision] step {step + 1}/{opts.vision_steps} loss {run_loss:.4f} "
                f"run-acc shape {run_s:.3f} colour {run_c:.3f} "
                f"elapsed {time.time() - run.t0:.0f}s"
            )
    vs, vc = vision_test_accuracy(run)
    run.log(
        f"[vision] done in {time.time() - t1:.0f}s; "
        f"test-image accuracy shape {vs:.4f} colour {vc:.4f}"
    )


# ---- phase 2: the VQA pairs


def freeze_and_cache_vision(run: Run) -> None:
    """Freeze the vision tower and cache its visual tokens of every image and mirror image."""
    run.model.model.visual.requires_grad_(False)
    run.model.model.visual.eval()
    hidden = run.opts.text_hidden
    with torch.no_grad():
        for name, imgs in (
            ("train", run.train.images),
            ("train-flip", run.train.images.flip(-1)),
            ("test", run.test.images),
        ):
            chunks = []
            for lo in range(0, len(imgs), CHUNK):
                x = imgs[lo : lo + CHUNK]
                chunks.append(visual_tokens(run, x).view(len(x), run.opts.n_visual, hidden))
            run.cached[name] = torch.cat(chunks)
    run.log(f"[vqa] vision frozen; features cached, t={time.time() - run.t0:.0f}s")


def vqa_optimizer(run: Run) -> tuple[torch.optim.AdamW, list[torch.nn.Parameter]]:
    """AdamW over the trainable parameters (and the heads), no weight decay on 1-D ones."""
    params = [p for p in run.model.parameters() if p.requires_grad] + list(run.heads.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": run.opts.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=run.opts.lr,
        betas=(0.9, 0.98),
    )
    return opt, params


def vqa_forward(
    run: Run, split: Split, idx: torch.Tensor, do_augment: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at the answer and eos positions, their targets, visual tokens, image labels."""
    opts, model = run.opts, run.model
    hidden = opts.text_hidden
    ids, att, pos = collate(split, idx, run.eos)
    rows = split.image_of[idx]
    if opts.freeze_vision:
        feats = run.cached[split.name][rows]
        if do_augment and opts.augment != "none":
            flip = torch.rand(len(idx), generator=run.gen) < 0.5
            feats = torch.where(flip[:, None, None], run.cached["train-flip"][rows], feats)
        emb = model.model.get_input_embeddings()(ids)
        emb = emb.masked_scatter(
            (ids == model.config.image_token_id)[..., None], feats.reshape(-1, hidden)
        )
        o = model.model.language_model(inputs_embeds=emb, attention_mask=att, position_ids=pos)
        logits = model.lm_head(o.last_hidden_state[:, -3:-1])
        return logits, ids[:, -2:], feats.reshape(-1, hidden), split.labels[rows]
    x = split.images[rows]
    if do_augment:
        x = augment(x, opts.augment, run.gen)
    o = model.model(
        input_ids=ids,
        attention_mask=att,
        position_ids=pos,
        pixel_values=patchify(x, opts.patch, MERGE),
        image_grid_thw=opts.grid.repeat(len(idx), 1),
    )
    logits = model.lm_head(o.last_hidden_state[:, -3:-1])  # predicts answer, then eos
    pooled = torch.cat(o.image_outputs.pooler_output)
    return logits, ids[:, -2:], pooled, split.labels[rows]


def quick_test(run: Run, limit: int = 2000) -> dict[str, float]:
    """Teacher-forced exact match on a fixed random sample of test questions (monitoring)."""
    test = run.test
    run.model.eval()
    per: dict[str, list[int]] = {}
    g = torch.Generator().manual_seed(123)
    sel = torch.randperm(len(test.seqs), generator=g)[:limit]
    with torch.no_grad():
        for lo in range(0, len(sel), 256):
            idx = sel[lo : lo + 256]
            logits, tgt, _, _ = vqa_forward(run, test, idx, False)
            ok = (logits.argmax(-1) == tgt).all(-1)
            for j, k in zip(idx.tolist(), ok.tolist(), strict=True):
                counts = per.setdefault(answer_type(test.answers[j]), [0, 0])
                counts[0] += int(k)
                counts[1] += 1
    run.model.train()
    tot = sum(v[0] for v in per.values()) / sum(v[1] for v in per.values())
    return {"all": round(tot, 4), **{k: round(v[0] / v[1], 4) for k, v in sorted(per.items())}}


def train_vqa(run: Run) -> int:
    """Phase 2: the model on the VQA pairs (+ auxiliary losses if joint); returns steps done."""
    opts, train = run.opts, run.train
    if opts.freeze_vision:
        freeze_and_cache_vision(run)
    opt, params = vqa_optimizer(run)
    t2 = time.time()
    order = torch.randperm(len(train.seqs), generator=run.gen)
    cursor, epoch = 0, 0
    run_loss, run_acc = 0.0, 0.0
    steps_done = 0
    for step in range(opts.steps):
        if (time.time() - run.t0) / 60 > opts.max_minutes:
            run.log(f"[vqa] stopping at step {step}: time limit {opts.max_minutes} min")
            break
        set_lr(opt, lr_at(step, opts.steps, opts.warmup, opts.lr))
        if cursor + opts.batch > len(order):
            order = torch.randperm(len(train.seqs), generator=run.gen)
            cursor, epoch = 0, epoch + 1
        idx = order[cursor : cursor + opts.batch]
        cursor += opts.batch
        logits, tgt, pooled, lab = vqa_forward(run, train, idx, True)
        lm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        loss = lm_loss
        if opts.aux_weight > 0 and not opts.freeze_vision:
            a_loss, _, _ = aux_loss(run, pooled, lab)
            loss = loss + opts.aux_weight * a_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        steps_done = step + 1
        acc = float((logits.argmax(-1) == tgt).all(-1).float().mean())
        run_loss = 0.95 * run_loss + 0.05 * lm_loss.item() if step else lm_loss.item()
        run_acc = 0.95 * run_acc + 0.05 * acc if step else acc
        if (step + 1) % opts.log_every == 0:
            run.log(
                f"[vqa] step {step + 1}/{opts.steps} epoch {epoch} "
                f"lr {opt.param_groups[0]['lr']:.2e} loss {run_loss:.4f} "
                f"run-acc {run_acc:.4f} elapsed {time.time() - run.t0:.0f}s"
            )
        if (step + 1) % opts.eval_every == 0:
            run.log(f"[vqa] step {step + 1} quick test (teacher-forced, 2000 q): {quick_test(run)}")
    run.log(
        f"[vqa] done: {steps_done} steps in {time.time() - t2:.0f}s; "
        f"total training time {time.time() - run.t0:.0f}s"
    )
    return steps_done


# ---- the whole run


def load_data() -> tuple[Split, Split, list[str], tuple[str, ...], dict[int, str], dict[int, str]]:
    """Questions of both splits, the answer words, colours and image paths."""
    from easy_vqa import (
        get_answers,
        get_test_image_paths,
        get_test_questions,
        get_train_image_paths,
        get_train_questions,
    )

    splits = []
    for name, (qs, as_, ids) in (("train", get_train_questions()), ("test", get_test_questions())):
        empty = torch.empty(0)
        splits.append(Split(name, list(qs), list(as_), list(ids), empty, {}))
    answer_words = list(get_answers())
    return (
        splits[0],
        splits[1],
        answer_words,
        colours_of(answer_words),
        get_train_image_paths(),
        get_test_image_paths(),
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; the returned generator draws batches and augmentations."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def main(argv: list[str] | None = None) -> None:
    """Train, save, evaluate through the service's backend and write the model card."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    opts = parse_options(argv)
    t0 = time.time()
    torch.set_num_threads(opts.threads)
    gen = seed_everything(opts.seed)

    out = Path(opts.out)
    if out.exists():
        shutil.rmtree(out)
    train, test, answer_words, colours, train_paths, test_paths = load_data()
    words = sorted(
        {w for s in [*train.questions, *test.questions, *answer_words] for w in split_words(s)}
    )
    recipe = make_recipe(opts, words)
    build_glm4v(recipe, out)
    log = Tee(out / "training_log.txt")
    log(f"# train_easyvqa {' '.join(sys.argv[1:] if argv is None else argv)}")
    log(f"args: {json.dumps(asdict(opts))}")
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    log(f"vocab {len(processor.tokenizer)}, parameters {n_params:,} (vision {n_vision:,})")

    train.images, train.index = load_images(processor, train_paths, opts.patch)
    test.images, test.index = load_images(processor, test_paths, opts.patch)
    log(
        f"images: train {len(train.images)}, test {len(test.images)}; "
        f"{opts.n_visual} visual tokens each; t={time.time() - t0:.0f}s"
    )
    train.labels = label_tensor(train, colours)
    test.labels = label_tensor(test, colours)  # monitoring only
    log(
        f"derived labels: train shape {int((train.labels[:, 0] >= 0).sum())}/{len(train.labels)}, "
        f"colour {int((train.labels[:, 1] >= 0).sum())}/{len(train.labels)}"
    )
    encoder = PromptEncoder(processor, model, answer_words, opts.grid)
    encoder.encode(train)
    encoder.encode(test)
    log(
        f"encoded {len(train.seqs)} train / {len(test.seqs)} test questions, "
        f"{len(encoder.prompts)} distinct; t={time.time() - t0:.0f}s"
    )

    # The heads draw their initial weights from torch's global RNG: create them here, after
    # the model is built, as the bundled checkpoint's run did.
    heads = make_aux_heads(opts.text_hidden, len(colours))
    run = Run(opts, model, heads, train, test, gen, log, t0, encoder.eos)
    pretrain_vision(run)
    steps_done = train_vqa(run)
    train_seconds = time.time() - t0
    vs, vc = vision_test_accuracy(run)
    log(f"[vqa] vision aux heads on test images: shape {vs:.4f} colour {vc:.4f}")

    # The auxiliary heads are not part of the model; the saved checkpoint is measured as served.
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del run, model, encoder
    result = evaluate(out, "test", opts.eval_limit)
    log_evaluation(log, result)
    size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    log(f"checkpoint size {size_mb:.1f} MB; total wall time {time.time() - t0:.0f}s")

    stats: TrainStats = {
        "parameters": n_params,
        "vision_steps": opts.vision_steps,
        "steps": steps_done,
        "train_seconds": round(train_seconds),
        "threads": opts.threads,
        "test": {k: v for k, v in result.items() if k != "examples_wrong"},
        "size_mb": round(size_mb, 1),
        "vision_test": [round(vs, 4), round(vc, 4)],
    }
    (out / "vlmq_recipe.json").write_text(
        json.dumps({"seed": opts.seed, "args": asdict(opts), **stats}, indent=2)
    )
    write_model_card(out, opts, recipe, stats, len(processor.tokenizer), colours)
    log("wrote model card")


def log_evaluation(log: Tee, result: EvalResult) -> None:
    """Log the test-split accuracy, per answer type, and a few wrong answers."""
    log(
        f"test accuracy (service backend, exact match, {result['n']} questions): "
        f"{result['accuracy']:.4f}"
    )
    for t, v in result["per_type"].items():
        log(f"  {t:7s} {v['accuracy']:.4f} ({v['correct']}/{v['n']})")
    log(f"  eval took {result['seconds']}s; some wrong answers: {result['examples_wrong'][:10]}")


def write_model_card(
    out: Path,
    opts: Options,
    recipe: Glm4vRecipe,
    stats: TrainStats,
    vocab: int,
    colours: tuple[str, ...],
) -> None:
    """Write README.md next to the checkpoint: what it does, its accuracy, how it was made."""
    test = stats["test"]
    rows = "\n".join(
        f"| {t} | {v['n']} | {v['correct']} | {100 * v['accuracy']:.2f} % |"
        for t, v in test["per_type"].items()
    )
    t, v = recipe.text, recipe.vision
    if opts.freeze_vision:
        phase3 = (
            "the vision tower is frozen, its visual tokens are cached for every training image and "
            "its mirror image, and the language model (with the embeddings and LM head) is trained "
            "on the VQA pairs"
        )
    else:
        phase3 = (
            "the whole model is trained on the VQA pairs, keeping the auxiliary losses "
            f"(weight {opts.aux_weight})"
        )
    minutes = stats["train_seconds"] / 60
    card = f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [glm4v, easy-vqa, toy]
---

# easyvqa-glm4v — the bundled toy model of vlmq

A tiny vision-language model with the **GLM-4V architecture** (`Glm4vForConditionalGeneration`,
the class of GLM-4.1V / GLM-4.6V-Flash), trained from scratch on the CPU on the public
[easy-VQA](https://github.com/vzhou842/easy-VQA) data set (package `easy-vqa`). It is bundled so
that the service can run end to end without downloading anything; it loads through exactly the
same code path as a real GLM-4.6V-Flash checkpoint (`AutoProcessor` +
`AutoModelForImageTextToText`, GLM chat template, `enable_thinking=False`).

## What it can do — and what it cannot

easy-VQA images are 64x64 pictures of **one** shape (circle, rectangle or triangle) in one of
eight colours ({", ".join(colours)}) on a light background. The model answers
questions such as "what shape is in the image?", "what color is the triangle?",
"is there not a red shape?" with a single word: one of the 13 answers
(the 3 shapes, the 8 colours, `yes`, `no`).

It knows shapes and colours and nothing else. It has a 13-word answer space and a vocabulary
of {vocab} tokens (the words of easy-VQA's questions); any other question, any other kind of
image (photos, documents, several objects) gets one of those 13 words, confidently and
meaninglessly. Images of any size are resized to 64x64 pixels by its image processor
(non-square images keep their aspect ratio, e.g. a 300x200 image becomes 64x48). It is a test
fixture and a demo, not a general model.

## Measured accuracy

Exact match of the greedy answer, as the service returns it (the `answer` of the service's own
`TransformersVLM` backend: special tokens stripped, whitespace stripped), on the **full
easy-VQA test split** ({test["n"]} questions, images never seen in training), computed by
`workers/models/evaluate_easyvqa.py` on the saved checkpoint:

| answer type | questions | correct | accuracy |
|---|---|---|---|
{rows}
| **all** | {test["n"]} | {test["correct"]} | **{100 * test["accuracy"]:.2f} %** |

## How it was trained

- Command: `nice -n 19 python -m workers.models.train_easyvqa --out {opts.out}` (seed {opts.seed},
  {stats["threads"]} torch CPU threads); the log is `training_log.txt` next to this file.
- Training wall time: {stats["train_seconds"]} s ({minutes:.1f} min) on a 2-core CPU machine,
  from start to the end of training, not counting the test-split evaluation.
- Model: {stats["parameters"]:,} parameters. Text decoder (GLM-4): hidden {t.hidden_size},
  {t.num_hidden_layers} layers, {t.num_attention_heads} heads ({t.num_key_value_heads} KV heads),
  MLP {t.intermediate_size}. Vision tower: hidden {v.hidden_size}, depth {v.depth}, patch
  {v.patch_size}, 2x2 merge, so an image becomes 8x8 patches and 16 visual tokens. Word-level
  tokenizer with GLM's special tokens.
- Data: easy-VQA train split only (38,575 questions on 4,000 images); the test split (9,673
  questions on 1,000 other images) was used for measurement only.
- Input format: exactly what the service sends — the GLM chat template with the image and the
  question in one user turn, generation prompt, `enable_thinking=False` — followed by the target
  `<answer> <|endoftext|>`; the loss is on those two tokens only.
- Recipe: (1) each training image's shape and colour are read off its own questions and
  answers (e.g. "what color is the circle?" / "red" -> a red circle; "is there a blue shape?" /
  "no" -> not blue);
  (2) the vision tower is pre-trained alone for {opts.vision_steps} steps of batch
  {opts.vision_batch} with two auxiliary linear heads (shape, colour) on its max-pooled output,
  random horizontal flips (augmentation: {opts.augment}), AdamW peak LR {opts.vision_lr},
  warm-up then cosine decay;
  (3) {phase3}, for {stats["steps"]} steps of batch {opts.batch}: AdamW (peak LR {opts.lr},
  weight decay {opts.weight_decay}), {opts.warmup} warm-up steps then cosine decay, loss on the
  answer and end-of-text tokens only, no label smoothing. The auxiliary heads are dropped; the
  checkpoint is a plain `Glm4vForConditionalGeneration`.
- Vision tower's own accuracy on the test images (auxiliary heads, labels read off the test
  questions): shape {100 * stats["vision_test"][0]:.2f} %,
  colour {100 * stats["vision_test"][1]:.2f} %.
- Checkpoint size: {stats["size_mb"]} MB (float32 safetensors).

## Licence and data

easy-VQA is MIT-licensed (Victor Zhou). The weights here were trained from random
initialisation by vlmq's own script; no pretrained weights were used.
"""
    (out / "README.md").write_text(card)


if __name__ == "__main__":
    main()
