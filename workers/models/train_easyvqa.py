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
5. Save, reload from disk and measure exact-match accuracy on the full test split with
   greedy generation, the way the service answers (`evaluate_easyvqa.evaluate`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workers.models.evaluate_easyvqa import answer_type, conversation, evaluate
from workers.models.glm4v_builder import Glm4vRecipe, TextSize, VisionSize, build_glm4v, split_words

SHAPES = ("circle", "rectangle", "triangle")
IMAGE_SIDE = 64  # easy-VQA images are 64x64; every image is resized to this many pixels


class Tee:
    """Print to stdout and append to a log file."""

    def __init__(self, path: Path):
        self.file = open(path, "a", buffering=1)

    def __call__(self, *parts) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.file.write(line + "\n")


def colours_of(answers: list[str]) -> tuple[str, ...]:
    return tuple(sorted(a for a in answers if a not in SHAPES and a not in ("yes", "no")))


def derive_image_labels(questions, answers, image_ids, colours) -> dict[int, tuple[int, int]]:
    """Shape and colour index of each image, read off its questions (-1 where undetermined)."""
    cand: dict[int, tuple[set, set]] = {}
    for q, a, i in zip(questions, answers, image_ids):
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
        s = SHAPES.index(next(iter(shapes))) if len(shapes) == 1 else -1
        c = colours.index(next(iter(cols))) if len(cols) == 1 else -1
        labels[i] = (s, c)
    return labels


def patchify(images: torch.Tensor, patch: int, merge: int, temporal: int = 2) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B * patches, 3 * temporal * patch^2), as Glm4vImageProcessor."""
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


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float = 0.03) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the bundled easy-VQA GLM-4V model on the CPU.")
    p.add_argument("--out", default="workers/models/easyvqa-glm4v")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-hidden", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=3)
    p.add_argument("--text-heads", type=int, default=4)
    p.add_argument("--vision-hidden", type=int, default=64)
    p.add_argument("--vision-depth", type=int, default=2)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--vision-steps", type=int, default=1500)
    p.add_argument("--vision-batch", type=int, default=128)
    p.add_argument("--vision-lr", type=float, default=3e-3)
    p.add_argument("--augment", choices=["none", "hflip", "dihedral"], default="hflip")
    p.add_argument(
        "--joint",
        dest="freeze_vision",
        action="store_false",
        help="phase 2 trains vision tower and LM together (default: vision frozen, LM on cached features)",
    )
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--aux-weight", type=float, default=0.3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument(
        "--max-minutes", type=float, default=38.0, help="stop training (not eval) after this"
    )
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument(
        "--eval-limit", type=int, default=None, help="final test eval on the first N only"
    )
    args = p.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    from easy_vqa import (
        get_answers,
        get_test_image_paths,
        get_test_questions,
        get_train_image_paths,
        get_train_questions,
    )
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    tr_q, tr_a, tr_i = get_train_questions()
    te_q, te_a, te_i = get_test_questions()
    answer_words = list(get_answers())
    colours = colours_of(answer_words)
    words = sorted({w for s in [*tr_q, *te_q, *answer_words] for w in split_words(s)})

    merge = 2
    pixels = 2 * IMAGE_SIDE * IMAGE_SIDE  # smart_resize counts both temporal copies
    recipe = Glm4vRecipe(
        words=words,
        text=TextSize(
            hidden_size=args.text_hidden,
            intermediate_size=3 * args.text_hidden,
            num_hidden_layers=args.text_layers,
            num_attention_heads=args.text_heads,
            num_key_value_heads=max(1, args.text_heads // 2),
        ),
        vision=VisionSize(
            hidden_size=args.vision_hidden,
            intermediate_size=2 * args.vision_hidden,
            depth=args.vision_depth,
            num_heads=max(1, args.vision_hidden // 32),
            patch_size=args.patch,
            spatial_merge_size=merge,
            min_pixels=pixels,
            max_pixels=pixels,
        ),
        seed=args.seed,
    )
    build_glm4v(recipe, out)
    log = Tee(out / "training_log.txt")
    log(f"# train_easyvqa {' '.join(sys.argv[1:] if argv is None else argv)}")
    log(f"args: {json.dumps(vars(args))}")
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    tok = processor.tokenizer
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"vocab {len(tok)}, parameters {n_params:,} (vision {sum(p.numel() for p in model.model.visual.parameters()):,})"
    )

    # ---- images: processed once by the checkpoint's own image processor, kept as 64x64 tensors
    def load_images(paths: dict[int, str]) -> tuple[torch.Tensor, dict[int, int]]:
        ids = sorted(paths)
        pil = []
        for i in ids:
            with Image.open(paths[i]) as im:
                pil.append(im.convert("RGB"))
        feats = processor.image_processor(images=pil, return_tensors="pt")
        grid = feats["image_grid_thw"]
        assert (
            grid == torch.tensor([1, IMAGE_SIDE // args.patch, IMAGE_SIDE // args.patch])
        ).all(), grid[:3]
        pv = feats["pixel_values"]
        imgs = unpatchify(pv, len(ids), IMAGE_SIDE, args.patch, merge)
        assert torch.equal(patchify(imgs, args.patch, merge), pv), "patchify mismatch"
        return imgs, {i: k for k, i in enumerate(ids)}

    tr_imgs, tr_index = load_images(get_train_image_paths())
    te_imgs, te_index = load_images(get_test_image_paths())
    grid1 = torch.tensor([[1, IMAGE_SIDE // args.patch, IMAGE_SIDE // args.patch]])
    n_vis = IMAGE_SIDE // args.patch // merge
    n_vis *= n_vis
    log(
        f"images: train {len(tr_imgs)}, test {len(te_imgs)}; {n_vis} visual tokens each; t={time.time() - t0:.0f}s"
    )

    # ---- shape / colour labels of each image, derived from its questions
    def label_tensor(qs, as_, ids, index):
        labels = derive_image_labels(qs, as_, ids, colours)
        lab = torch.full((len(index), 2), -1, dtype=torch.long)
        for i, (s, c) in labels.items():
            lab[index[i]] = torch.tensor([s, c])
        return lab

    tr_lab = label_tensor(tr_q, tr_a, tr_i, tr_index)
    te_lab = label_tensor(te_q, te_a, te_i, te_index)  # monitoring only
    log(
        f"derived labels: train shape {int((tr_lab[:, 0] >= 0).sum())}/{len(tr_lab)}, "
        f"colour {int((tr_lab[:, 1] >= 0).sum())}/{len(tr_lab)}"
    )

    # ---- token ids exactly as the service's chat template produces them, + answer + eos
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    dummy = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE))
    prompt_cache: dict[str, torch.Tensor] = {}

    def prompt_ids(q: str) -> torch.Tensor:
        if q not in prompt_cache:
            enc = processor.apply_chat_template(
                conversation(dummy, q),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                enable_thinking=False,
            )
            prompt_cache[q] = enc["input_ids"][0]
        return prompt_cache[q]

    answer_id = {a: tok.convert_tokens_to_ids(a) for a in answer_words}
    assert all(tok.convert_ids_to_tokens(v) == a for a, v in answer_id.items())

    def encode(qs, as_):
        seqs = [
            torch.cat([prompt_ids(q), torch.tensor([answer_id[a], eos])]) for q, a in zip(qs, as_)
        ]
        pos = []
        image_token = model.config.image_token_id
        for s in seqs:
            mm = (s == image_token).long()[None]
            pid, _ = model.model.get_rope_index(s[None], mm_token_type_ids=mm, image_grid_thw=grid1)
            pos.append(pid[:, 0])
        return seqs, pos

    tr_seq, tr_pos = encode(tr_q, tr_a)
    te_seq, te_pos = encode(te_q, te_a)
    tr_img_of = torch.tensor([tr_index[i] for i in tr_i])
    te_img_of = torch.tensor([te_index[i] for i in te_i])
    log(
        f"encoded {len(tr_seq)} train / {len(te_seq)} test questions, {len(prompt_cache)} distinct; t={time.time() - t0:.0f}s"
    )

    def collate(seqs, poss, idx):
        length = max(len(seqs[j]) for j in idx)
        ids = torch.full((len(idx), length), eos, dtype=torch.long)
        att = torch.zeros((len(idx), length), dtype=torch.long)
        pos = torch.zeros((3, len(idx), length), dtype=torch.long)
        for r, j in enumerate(idx.tolist()):
            n = len(seqs[j])
            ids[r, length - n :] = seqs[j]
            att[r, length - n :] = 1
            pos[:, r, length - n :] = poss[j]
        return ids, att, pos

    hidden = args.text_hidden
    heads = torch.nn.ModuleDict(
        {
            "shape": torch.nn.Linear(hidden, len(SHAPES)),
            "colour": torch.nn.Linear(hidden, len(colours)),
        }
    )

    def aux_loss(pooled_tokens: torch.Tensor, lab: torch.Tensor):
        pooled = pooled_tokens.view(lab.shape[0], n_vis, hidden).max(1).values
        ls = heads["shape"](pooled)
        lc = heads["colour"](pooled)
        loss = F.cross_entropy(ls, lab[:, 0], ignore_index=-1) + F.cross_entropy(
            lc, lab[:, 1], ignore_index=-1
        )
        return loss, ls.argmax(-1), lc.argmax(-1)

    def vision_test_accuracy() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            ss, cs = [], []
            for lo in range(0, len(te_imgs), 500):
                x = te_imgs[lo : lo + 500]
                v = model.model.visual(
                    patchify(x, args.patch, merge), grid_thw=grid1.repeat(len(x), 1)
                )
                _, s, c = aux_loss(v.pooler_output, te_lab[lo : lo + 500])
                ss.append(s)
                cs.append(c)
        s, c = torch.cat(ss), torch.cat(cs)
        ms, mc = te_lab[:, 0] >= 0, te_lab[:, 1] >= 0
        model.train()
        return float((s[ms] == te_lab[ms, 0]).float().mean()), float(
            (c[mc] == te_lab[mc, 1]).float().mean()
        )

    def augment(x: torch.Tensor) -> torch.Tensor:
        if args.augment == "hflip":
            return hflip(x, gen)
        if args.augment == "dihedral":
            return dihedral(x, gen)
        return x

    # ---- phase 1: vision tower + auxiliary heads
    model.train()
    vis_params = list(model.model.visual.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(
        vis_params, lr=args.vision_lr, weight_decay=args.weight_decay, betas=(0.9, 0.98)
    )
    t1 = time.time()
    run_loss, run_s, run_c = 0.0, 0.0, 0.0
    for step in range(args.vision_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.vision_steps, 50, args.vision_lr)
        idx = torch.randint(0, len(tr_imgs), (args.vision_batch,), generator=gen)
        x = augment(tr_imgs[idx])
        lab = tr_lab[idx]
        v = model.model.visual(patchify(x, args.patch, merge), grid_thw=grid1.repeat(len(idx), 1))
        loss, s, c = aux_loss(v.pooler_output, lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vis_params, 1.0)
        opt.step()
        run_loss = 0.95 * run_loss + 0.05 * loss.item() if step else loss.item()
        ms, mc = lab[:, 0] >= 0, lab[:, 1] >= 0
        run_s = 0.95 * run_s + 0.05 * float((s[ms] == lab[ms, 0]).float().mean())
        run_c = 0.95 * run_c + 0.05 * float((c[mc] == lab[mc, 1]).float().mean())
        if (step + 1) % args.log_every == 0 or step + 1 == args.vision_steps:
            log(
                f"[vision] step {step + 1}/{args.vision_steps} loss {run_loss:.4f} "
                f"run-acc shape {run_s:.3f} colour {run_c:.3f} elapsed {time.time() - t0:.0f}s"
            )
    vs, vc = vision_test_accuracy()
    log(
        f"[vision] done in {time.time() - t1:.0f}s; test-image accuracy shape {vs:.4f} colour {vc:.4f}"
    )

    # ---- phase 2: whole model on the VQA pairs (+ auxiliary losses)
    cached: dict[str, torch.Tensor] = {}
    if args.freeze_vision:
        model.model.visual.requires_grad_(False)
        model.model.visual.eval()
        with torch.no_grad():
            for name, imgs in (
                ("train", tr_imgs),
                ("train-flip", tr_imgs.flip(-1)),
                ("test", te_imgs),
            ):
                chunks = []
                for lo in range(0, len(imgs), 500):
                    x = imgs[lo : lo + 500]
                    v = model.model.visual(
                        patchify(x, args.patch, merge), grid_thw=grid1.repeat(len(x), 1)
                    )
                    chunks.append(v.pooler_output.view(len(x), n_vis, hidden))
                cached[name] = torch.cat(chunks)
        log(f"[vqa] vision frozen; features cached, t={time.time() - t0:.0f}s")
    params = [p for p in model.parameters() if p.requires_grad] + list(heads.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )

    def forward(seqs, poss, img_of, imgs, labs, idx, do_augment: bool):
        ids, att, pos = collate(seqs, poss, idx)
        if args.freeze_vision:
            which = "test" if imgs is te_imgs else "train"
            feats = cached[which][img_of[idx]]
            if do_augment and args.augment != "none":
                flip = torch.rand(len(idx), generator=gen) < 0.5
                feats = torch.where(flip[:, None, None], cached["train-flip"][img_of[idx]], feats)
            emb = model.model.get_input_embeddings()(ids)
            emb = emb.masked_scatter(
                (ids == model.config.image_token_id)[..., None], feats.reshape(-1, hidden)
            )
            o = model.model.language_model(inputs_embeds=emb, attention_mask=att, position_ids=pos)
            logits = model.lm_head(o.last_hidden_state[:, -3:-1])
            return logits, ids[:, -2:], feats.reshape(-1, hidden), labs[img_of[idx]]
        x = imgs[img_of[idx]]
        if do_augment:
            x = augment(x)
        o = model.model(
            input_ids=ids,
            attention_mask=att,
            position_ids=pos,
            pixel_values=patchify(x, args.patch, merge),
            image_grid_thw=grid1.repeat(len(idx), 1),
        )
        logits = model.lm_head(o.last_hidden_state[:, -3:-1])  # predicts answer, then eos
        pooled = torch.cat(o.image_outputs.pooler_output)
        return logits, ids[:, -2:], pooled, labs[img_of[idx]]

    def quick_test(limit: int = 2000) -> dict:
        model.eval()
        per: dict[str, list[int]] = {}
        g = torch.Generator().manual_seed(123)
        sel = torch.randperm(len(te_seq), generator=g)[:limit]
        with torch.no_grad():
            for lo in range(0, len(sel), 256):
                idx = sel[lo : lo + 256]
                logits, tgt, _, _ = forward(te_seq, te_pos, te_img_of, te_imgs, te_lab, idx, False)
                ok = (logits.argmax(-1) == tgt).all(-1)
                for j, k in zip(idx.tolist(), ok.tolist()):
                    per.setdefault(answer_type(te_a[j]), [0, 0])
                    per[answer_type(te_a[j])][0] += int(k)
                    per[answer_type(te_a[j])][1] += 1
        model.train()
        tot = sum(v[0] for v in per.values()) / sum(v[1] for v in per.values())
        return {"all": round(tot, 4), **{k: round(v[0] / v[1], 4) for k, v in sorted(per.items())}}

    t2 = time.time()
    order = torch.randperm(len(tr_seq), generator=gen)
    cursor, epoch = 0, 0
    run_loss, run_acc = 0.0, 0.0
    steps_done = 0
    for step in range(args.steps):
        if (time.time() - t0) / 60 > args.max_minutes:
            log(f"[vqa] stopping at step {step}: time limit {args.max_minutes} min")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        if cursor + args.batch > len(order):
            order = torch.randperm(len(tr_seq), generator=gen)
            cursor, epoch = 0, epoch + 1
        idx = order[cursor : cursor + args.batch]
        cursor += args.batch
        logits, tgt, pooled, lab = forward(tr_seq, tr_pos, tr_img_of, tr_imgs, tr_lab, idx, True)
        lm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        loss = lm_loss
        if args.aux_weight > 0 and not args.freeze_vision:
            a_loss, _, _ = aux_loss(pooled, lab)
            loss = loss + args.aux_weight * a_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        steps_done = step + 1
        acc = float((logits.argmax(-1) == tgt).all(-1).float().mean())
        run_loss = 0.95 * run_loss + 0.05 * lm_loss.item() if step else lm_loss.item()
        run_acc = 0.95 * run_acc + 0.05 * acc if step else acc
        if (step + 1) % args.log_every == 0:
            log(
                f"[vqa] step {step + 1}/{args.steps} epoch {epoch} lr {opt.param_groups[0]['lr']:.2e} "
                f"loss {run_loss:.4f} run-acc {run_acc:.4f} elapsed {time.time() - t0:.0f}s"
            )
        if (step + 1) % args.eval_every == 0:
            log(f"[vqa] step {step + 1} quick test (teacher-forced, 2000 q): {quick_test()}")
    train_seconds = time.time() - t0
    vs, vc = vision_test_accuracy()
    log(
        f"[vqa] done: {steps_done} steps in {time.time() - t2:.0f}s; total training time {train_seconds:.0f}s"
    )
    log(f"[vqa] vision aux heads on test images: shape {vs:.4f} colour {vc:.4f}")

    # ---- save (auxiliary heads are not part of the model) and evaluate the saved checkpoint
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    result = evaluate(out, "test", args.eval_limit)
    log(f"test accuracy (generate, exact match, {result['n']} questions): {result['accuracy']:.4f}")
    for t, v in result["per_type"].items():
        log(f"  {t:7s} {v['accuracy']:.4f} ({v['correct']}/{v['n']})")
    log(f"  eval took {result['seconds']}s; some wrong answers: {result['examples_wrong'][:10]}")
    size_mb = sum(f.stat().st_size for f in out.iterdir() if f.is_file()) / 1e6
    log(f"checkpoint size {size_mb:.1f} MB; total wall time {time.time() - t0:.0f}s")

    stats = {
        "parameters": n_params,
        "vision_steps": args.vision_steps,
        "steps": steps_done,
        "train_seconds": round(train_seconds),
        "threads": args.threads,
        "test": {k: v for k, v in result.items() if k != "examples_wrong"},
        "size_mb": round(size_mb, 1),
        "vision_test": [round(vs, 4), round(vc, 4)],
    }
    (out / "vlmq_recipe.json").write_text(
        json.dumps({"seed": args.seed, "args": vars(args), **stats}, indent=2)
    )
    write_model_card(out, args, recipe, stats, len(tok), colours)
    log("wrote model card")


def write_model_card(
    out: Path, args, recipe: Glm4vRecipe, stats: dict, vocab: int, colours
) -> None:
    test = stats["test"]
    rows = "\n".join(
        f"| {t} | {v['n']} | {v['correct']} | {100 * v['accuracy']:.2f} % |"
        for t, v in test["per_type"].items()
    )
    t, v = recipe.text, recipe.vision
    if args.freeze_vision:
        phase3 = (
            "the vision tower is frozen, its visual tokens are cached for every training image and "
            "its mirror image, and the language model (with the embeddings and LM head) is trained "
            "on the VQA pairs"
        )
    else:
        phase3 = (
            "the whole model is trained on the VQA pairs, keeping the auxiliary losses "
            f"(weight {args.aux_weight})"
        )
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
(non-square images keep their aspect ratio, e.g. a 300x200 image becomes 64x48). It is a test fixture
and a demo, not a general model.

## Measured accuracy

Exact match of the greedy answer (new tokens decoded with special tokens stripped, whitespace
stripped) on the **full easy-VQA test split** ({test["n"]} questions, images never seen in
training), computed by `workers/models/evaluate_easyvqa.py` on the saved checkpoint:

| answer type | questions | correct | accuracy |
|---|---|---|---|
{rows}
| **all** | {test["n"]} | {test["correct"]} | **{100 * test["accuracy"]:.2f} %** |

## How it was trained

- Command: `nice -n 19 python -m workers.models.train_easyvqa --out {args.out}` (seed {args.seed},
  {stats["threads"]} torch CPU threads); the log is `training_log.txt` next to this file.
- Training wall time: {stats["train_seconds"]} s ({stats["train_seconds"] / 60:.1f} min) on a 2-core CPU machine, from
  start to the end of training, not counting the test-split evaluation.
- Model: {stats["parameters"]:,} parameters. Text decoder (GLM-4): hidden {t.hidden_size},
  {t.num_hidden_layers} layers, {t.num_attention_heads} heads ({t.num_key_value_heads} KV heads), MLP {t.intermediate_size}.
  Vision tower: hidden {v.hidden_size}, depth {v.depth}, patch {v.patch_size}, 2x2 merge, so an image
  becomes 8x8 patches and 16 visual tokens. Word-level tokenizer with GLM's special tokens.
- Data: easy-VQA train split only (38,575 questions on 4,000 images); the test split (9,673
  questions on 1,000 other images) was used for measurement only.
- Input format: exactly what the service sends — the GLM chat template with the image and the
  question in one user turn, generation prompt, `enable_thinking=False` — followed by the target
  `<answer> <|endoftext|>`; the loss is on those two tokens only.
- Recipe: (1) each training image's shape and colour are read off its own questions and
  answers (e.g. "what color is the circle?" / "red" -> a red circle; "is there a blue shape?" /
  "no" -> not blue);
  (2) the vision tower is pre-trained alone for {args.vision_steps} steps of batch {args.vision_batch} with two
  auxiliary linear heads (shape, colour) on its max-pooled output, random horizontal flips
  (augmentation: {args.augment}), AdamW peak LR {args.vision_lr}, warm-up then cosine decay;
  (3) {phase3}, for {stats["steps"]} steps of batch {args.batch}: AdamW (peak LR {args.lr}, weight
  decay {args.weight_decay}), {args.warmup} warm-up steps then cosine decay, loss on the answer and
  end-of-text tokens only, no label smoothing. The auxiliary heads are dropped; the checkpoint
  is a plain `Glm4vForConditionalGeneration`.
- Vision tower's own accuracy on the test images (auxiliary heads, labels read off the test
  questions): shape {100 * stats["vision_test"][0]:.2f} %, colour {100 * stats["vision_test"][1]:.2f} %.
- Checkpoint size: {stats["size_mb"]} MB (float32 safetensors).

## Licence and data

easy-VQA is MIT-licensed (Victor Zhou). The weights here were trained from random
initialisation by vlmq's own script; no pretrained weights were used.
"""
    (out / "README.md").write_text(card)


if __name__ == "__main__":
    main()
