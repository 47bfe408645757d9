"""A tiny random-weight Qwen2-VL checkpoint, built on the spot.

Qwen2-VL numbers its positions with M-RoPE like GLM-4V, with its own vision tower, its own
processor and its own chat template: the continuous-batching engine's positions are
checked on a second family of that kind.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from workers.models.glm4v_builder import build_tokenizer

QWEN_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
    "{% if p.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PATCH = 4
MERGE = 2


def build_tiny_qwen2vl(words: list[str], out_dir: Path) -> Path:
    """Save a random-weight Qwen2-VL (4×4 patches merged 2×2) with a word-level tokenizer."""
    import torch

    tokenizer_object = build_tokenizer(words)
    tokenizer_object.add_special_tokens(QWEN_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        padding_side="left",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    token_id = tokenizer.convert_tokens_to_ids
    hidden, heads = 64, 4
    rotary = hidden // heads // 2
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [rotary - 2 * (rotary // 4), rotary // 4, rotary // 4],
            },
            "pad_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "bos_token_id": None,
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir)
    side = PATCH * MERGE
    size = {"shortest_edge": (2 * side) ** 2, "longest_edge": (4 * side) ** 2}
    Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=PATCH, merge_size=MERGE, size=size),
        video_processor=Qwen2VLVideoProcessor(patch_size=PATCH, merge_size=MERGE, size=size),
        tokenizer=tokenizer,
        chat_template=QWEN_TEMPLATE,
    ).save_pretrained(out_dir)
    return out_dir
