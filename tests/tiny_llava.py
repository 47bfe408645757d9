"""A tiny random-weight LLaVA checkpoint (CLIP vision + Llama text), built on the spot.

It proves the transformers backend is not tied to GLM: another architecture, another
processor, another chat template, the same code path.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from workers.models.glm4v_builder import build_tokenizer

LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}USER: "
    "{% for p in m.content %}{% if p.type == 'image' %}<image>"
    "{% elif p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}"
    "{% else %}ASSISTANT: {{ m.content }}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(words: list[str], out_dir: Path) -> Path:
    """Save a random-weight LLaVA (32×32 input, 8×8 patches) with a word-level tokenizer."""
    import torch

    tokenizer_object = build_tokenizer(words)
    tokenizer_object.add_special_tokens(["<image>", "<s>", "</s>", "USER:", "ASSISTANT:"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token="</s>",
        bos_token="<s>",
        pad_token="</s>",
        unk_token="[UNK]",  # noqa: S106 (a token, not a password)
        padding_side="left",
        extra_special_tokens={"image_token": "<image>"},
    )
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(out_dir)
    LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    ).save_pretrained(out_dir)
    return out_dir
