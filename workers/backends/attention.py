"""Attention maps: where an answer looked in each image.

After a request's answer is generated, its prompt and answer run once more through the
model with eager attention (the fused kernels do not return weights), alone: the rows it
was batched with are not touched, and neither is their answer. The attention of the
positions that produced the answer's tokens is averaged over heads and over the last
`LAST_LAYERS` layers of the language model, read at each image's tokens (one per merged
patch), averaged over the image's frames, normalised to sum to 1, and laid out on the
image's grid of merged patches (rows by columns).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# The layers averaged: the last ones, closest to the answer.
LAST_LAYERS = 2


def image_grids(
    model: Any, inputs: Any, image_token_id: int, images: int
) -> tuple[torch.Tensor, int]:
    """Each image's (frames, height, width) in patches, and the patches merged into one
    token per side: from the processor's `image_grid_thw` where the model has one (GLM-4V,
    Qwen2-VL), else a square of the image's tokens (LLaVA: the same count for every image)."""
    grids = inputs.get("image_grid_thw")
    if grids is not None:
        merge = int(getattr(model.config.vision_config, "spatial_merge_size", 1))
        return grids, merge
    per_image = int((inputs["input_ids"][0] == image_token_id).sum()) // images
    side = max(1, math.isqrt(per_image))
    return torch.tensor([[1, side, side]] * images), 1


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """The model runs with eager attention (which returns its weights) inside."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def image_maps(
    attentions: tuple[torch.Tensor, ...],
    input_ids: torch.Tensor,
    image_token_id: int,
    grids: torch.Tensor,
    merge: int,
    answer_from: int,
    answer_to: int,
) -> list[dict[str, Any]]:
    """Each image's map from one row's attentions (one [1, heads, length, length] per
    layer): the positions `answer_from` to `answer_to` (exclusive), those that produced the
    answer's tokens, looking at the image's tokens; `grids` is the images' (frames, height,
    width) in patches, `merge` the patches merged into one token per side."""
    layers = attentions[-LAST_LAYERS:]
    weights = torch.stack([layer[0].float().mean(dim=0) for layer in layers]).mean(dim=0)
    looked = weights[answer_from:answer_to].mean(dim=0)
    positions = (input_ids == image_token_id).nonzero().flatten()
    maps, start = [], 0
    for index, (frames, height, width) in enumerate(grids.tolist()):
        rows, columns = height // merge, width // merge
        count = frames * rows * columns
        values = looked[positions[start : start + count]].reshape(frames, rows, columns)
        start += count
        grid = values.mean(dim=0)
        total = float(grid.sum())
        grid = grid / total if total > 0 else torch.full_like(grid, 1.0 / grid.numel())
        maps.append(
            {
                "image": index,
                "grid": [rows, columns],
                "weights": [[round(float(v), 6) for v in row] for row in grid],
            }
        )
    return maps
