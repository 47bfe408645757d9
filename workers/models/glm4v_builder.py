"""Build small GLM-4V checkpoints (`Glm4vForConditionalGeneration`) in the Hugging Face format.

The bundled easy-VQA model and the tests' random-weight models are built here, so both
load through exactly the code path of a real GLM-4.1V / GLM-4.6V-Flash checkpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

# The text of a system or assistant message, whether a string or a list of parts.
MESSAGE_TEXT = (
    "{%- if msg.content is string %}{{ msg.content }}"
    "{%- else %}{%- for item in msg.content %}"
    "{%- if item.type == 'text' %}{{ item.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
)
# GLM's chat format, reduced to what a single-turn VLM needs. The `enable_thinking`
# switch mirrors GLM-4.6V: off appends "/nothink" and opens an empty think block.
GLM_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for msg in messages %}"
    "{%- if msg.role == 'system' %}<|system|>\n"
    + MESSAGE_TEXT
    + "{%- elif msg.role == 'user' %}<|user|>\n"
    "{%- if msg.content is string %}{{ msg.content }}"
    "{%- else %}{%- for item in msg.content %}"
    "{%- if item.type == 'image' or 'image' in item %}<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif item.type == 'text' %}{{ item.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- if enable_thinking is defined and not enable_thinking %}/nothink{%- endif %}"
    "{%- elif msg.role == 'assistant' %}<|assistant|>\n" + MESSAGE_TEXT + "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>\n"
    "{%- if enable_thinking is defined and not enable_thinking %}<think></think>\n{%- endif %}"
    "{%- endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "/nothink",
]

WORD_PATTERN = re.compile(r"[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]")
# Punctuation and digits every checkpoint knows, whatever words it was built with.
BASE_SYMBOLS = list("?.,!:;'\"()-/") + [str(d) for d in range(10)]
# Every printable ASCII character, a token each in a vocabulary that must spell any JSON,
# regex or choice a grammar asks for (see `spelling_vocabulary`).
PRINTABLE_ASCII = [chr(code) for code in range(0x20, 0x7F)]


@dataclass(frozen=True)
class TextSize:
    """Size of the language model (the GLM-4 decoder)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2


@dataclass(frozen=True)
class VisionSize:
    """Size of the vision tower; patch and merge sizes follow GLM-4.1V."""

    hidden_size: int = 32
    intermediate_size: int = 64
    depth: int = 2
    num_heads: int = 2
    patch_size: int = 14
    spatial_merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112


@dataclass(frozen=True)
class Glm4vRecipe:
    """Everything needed to build one checkpoint."""

    words: list[str]
    text: TextSize = field(default_factory=TextSize)
    vision: VisionSize = field(default_factory=VisionSize)
    seed: int = 0
    # A vocabulary that spells anything (`spelling_vocabulary`): constrained decoding needs it.
    spells: bool = False


def split_words(text: str) -> list[str]:
    """Split text the way the word-level tokenizer does (lower-cased words and punctuation)."""
    return WORD_PATTERN.findall(text.lower())


def build_tokenizer(words: list[str], spells: bool = False) -> Tokenizer:
    """A word-level tokenizer: the special tokens of GLM first, then the given words (and
    with `spells`, every printable ASCII character: see `spelling_vocabulary`)."""
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, "[UNK]", *BASE_SYMBOLS, *sorted(set(words))]:
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    if spells:
        spec = spelling_vocabulary(json.loads(tokenizer.to_str()))
        tokenizer = Tokenizer.from_str(json.dumps(spec))
    return tokenizer


def spelling_vocabulary(spec: dict[str, Any]) -> dict[str, Any]:
    """A word-level tokenizer's `tokenizer.json` that can spell any text a grammar asks for.

    Every printable ASCII character missing from the vocabulary becomes a token (after the
    others: existing ids keep their meaning), and tokens decode by plain concatenation (a
    space is a token of its own). A word-level decoder that puts spaces between words
    would make a token's text depend on its neighbours, and a grammar could not tell which
    tokens keep, say, a JSON string's characters together. Prompts read as before: the
    pre-tokenizer still splits them at spaces and punctuation.
    """
    vocab: dict[str, int] = spec["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for character in PRINTABLE_ASCII:
        if character not in vocab:
            vocab[character] = next_id
            next_id += 1
    spec["decoder"] = {"type": "Fuse"}
    return spec


def build_glm4v(recipe: Glm4vRecipe, out_dir: str | Path) -> Path:
    """Save a random-weight GLM-4V checkpoint (model, tokenizer, processor) to `out_dir`."""
    import torch
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm4vImageProcessor,
        Glm4vProcessor,
        Glm4vVideoProcessor,
        PreTrainedTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer([w.lower() for w in recipe.words], recipe.spells),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        padding_side="left",
        extra_special_tokens={"image_token": "<|image|>", "video_token": "<|video|>"},
    )
    token_id = tokenizer.convert_tokens_to_ids
    text, vision = recipe.text, recipe.vision
    head_dim = text.hidden_size // text.num_attention_heads
    rotary = head_dim // 2  # GLM-4V rotates half of each head (partial_rotary_factor 0.5)
    section = [rotary // 2 - 2 * (rotary // 8), rotary // 8, rotary // 8]
    config = Glm4vConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size,
            "num_hidden_layers": text.num_hidden_layers,
            "num_attention_heads": text.num_attention_heads,
            "num_key_value_heads": text.num_key_value_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "mrope_section": section,
            },
            "pad_token_id": token_id("<|endoftext|>"),
            "eos_token_id": [token_id("<|endoftext|>"), token_id("<|user|>")],
        },
        vision_config={
            "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size,
            "depth": vision.depth,
            "num_heads": vision.num_heads,
            "patch_size": vision.patch_size,
            "spatial_merge_size": vision.spatial_merge_size,
            "temporal_patch_size": 2,
            "image_size": vision.patch_size * 8,
            "out_hidden_size": text.hidden_size,
        },
        image_token_id=token_id("<|image|>"),
        video_token_id=token_id("<|video|>"),
        image_start_token_id=token_id("<|begin_of_image|>"),
        image_end_token_id=token_id("<|end_of_image|>"),
        video_start_token_id=token_id("<|begin_of_video|>"),
        video_end_token_id=token_id("<|end_of_video|>"),
    )
    torch.manual_seed(recipe.seed)
    model = Glm4vForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(out)

    size = {"shortest_edge": vision.min_pixels, "longest_edge": vision.max_pixels}
    processor = Glm4vProcessor(
        image_processor=Glm4vImageProcessor(
            patch_size=vision.patch_size, merge_size=vision.spatial_merge_size, size=size
        ),
        tokenizer=tokenizer,
        video_processor=Glm4vVideoProcessor(
            patch_size=vision.patch_size, merge_size=vision.spatial_merge_size, size=size
        ),
        chat_template=GLM_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    (out / "vlmq_recipe.json").write_text(json.dumps({"seed": recipe.seed}))
    return out
