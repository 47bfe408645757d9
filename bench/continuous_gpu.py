"""On a GPU: continuous against static batching with the GLM-4.6V-Flash shapes in bf16.

The model is GLM-4.6V-Flash's architecture (`Glm4vForConditionalGeneration`; text 4096
hidden × 40 layers, 32 query and 2 key-value heads, 13,696 MLP; vision about 24 × 1536) with
random weights, built on the GPU in memory (no download, no 18 GB checkpoint on disk). The
vocabulary is the word-level one of vlmq's builder, so the embedding and output matrices
are small: the weights read per decode step are those of the layers. In-process, through
the scheduler, continuous and static in the same run:

- decode tokens/s at concurrency 1, 8, 32 (max_tokens drawn from {32, 256}, `ignore_eos`),
  beside the memory-bandwidth bound (weights plus KV cache read once per step);
- time to first token of one request with a 1024×1024 image;
- peak GPU memory of each phase.

    .venv/bin/python -m bench.continuous_gpu --bandwidth-gbs 4800   # H200: 4.8 TB/s
    .venv/bin/python -m bench.continuous_gpu --tiny                 # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from services.core.inputs.prompts import GenerationParams
from workers.backends.base import PredictRequest
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.glm4v_builder import Glm4vRecipe, TextSize, VisionSize, build_glm4v
from workers.schedulers import ContinuousScheduler, Scheduler, StaticScheduler

WORDS = ["what", "color", "is", "the", "shape", "in", "image", "red", "blue", "circle"]
FLASH_TEXT = TextSize(
    hidden_size=4096,
    intermediate_size=13696,
    num_hidden_layers=40,
    num_attention_heads=32,
    num_key_value_heads=2,
)
FLASH_VISION = VisionSize(
    hidden_size=1536,
    intermediate_size=13696,
    depth=24,
    num_heads=12,
    patch_size=14,
    spatial_merge_size=2,
    min_pixels=112 * 112,
    max_pixels=1024 * 1024,
)
# The smoke run's text model differs from its checkpoint's, as the full one does.
TINY_TEXT = TextSize(hidden_size=256, intermediate_size=512, num_hidden_layers=2)
TINY_VISION = VisionSize(max_pixels=224 * 224)
LENGTHS = (32, 256)


def build_backend(text: TextSize, vision: VisionSize, device: str) -> TransformersVLM:
    """The processor of a small checkpoint of the same vision shape, and the full model
    built in memory on `device` (random weights)."""
    from transformers import AutoConfig, AutoProcessor, Glm4vForConditionalGeneration

    small = Glm4vRecipe(words=WORDS, vision=vision)
    folder = build_glm4v(small, Path(tempfile.mkdtemp(prefix="vlmq-gpu-bench-")))
    config = AutoConfig.from_pretrained(folder)
    for name, value in vars(text).items():
        setattr(config.text_config, name, value)
    # GLM-4V rotates half of each head; M-RoPE splits those dimensions in three.
    rotary = text.hidden_size // text.num_attention_heads // 2
    config.text_config.rope_parameters["mrope_section"] = [
        rotary // 2 - 2 * (rotary // 8),
        rotary // 8,
        rotary // 8,
    ]
    config.vision_config.out_hidden_size = text.hidden_size
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    config.text_config.dtype = config.vision_config.dtype = dtype
    torch.manual_seed(0)
    with torch.device(device):
        model = Glm4vForConditionalGeneration(config).to(dtype)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = False
    backend = TransformersVLM(str(folder))
    backend.adopt(AutoProcessor.from_pretrained(folder), model, device)
    return backend


def request(side: int, max_tokens: int, color: str = "red") -> PredictRequest:
    """One image question of a known answer length."""
    image = Image.new("RGB", (side, side), color)
    content = [{"type": "image", "image": image}, {"type": "text", "text": "what color?"}]
    params = GenerationParams(max_tokens=max_tokens, ignore_eos=True)
    return PredictRequest([{"role": "user", "content": content}], params)


def run_load(scheduler: Scheduler, requests: list[PredictRequest], concurrency: int) -> float:
    """Tokens/s of the load sent by `concurrency` clients at once."""

    def one(item: PredictRequest) -> int:
        return scheduler.run(item, company=0, time_limit_s=3600).prediction.completion_tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, requests))
    return tokens / (time.perf_counter() - started)


def bandwidth_bound(
    backend: TransformersVLM, concurrency: int, context: int, bandwidth_gbs: float
) -> float:
    """Decode tokens/s if every step only read the weights and the batch's KV cache once."""
    model = backend.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    element = next(model.parameters()).element_size()
    kv_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * element
    step_bytes = weight_bytes + concurrency * context * kv_per_token
    return concurrency * bandwidth_gbs * 1e9 / step_bytes


def peak_memory_gib(device: str) -> float:
    """Peak GPU memory since the last reset (0 on the CPU)."""
    if not device.startswith("cuda"):
        return 0.0
    return torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description="continuous against static on a GPU")
    parser.add_argument("--tiny", action="store_true", help="a small model (a CPU smoke run)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--bandwidth-gbs", type=float, default=4800.0)
    parser.add_argument("--side", type=int, default=448, help="image side of the load")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text, vision = (TINY_TEXT, TINY_VISION) if args.tiny else (FLASH_TEXT, FLASH_VISION)
    lengths = (4, 16) if args.tiny else LENGTHS
    backend = build_backend(text, vision, device)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    params = sum(p.numel() for p in backend.model.parameters())
    print(f"{gpu}: random GLM-4V with {params / 1e9:.3f} B parameters", flush=True)
    engine = backend.continuous_engine()
    assert engine is not None
    schedulers: dict[str, Scheduler] = {
        "continuous": ContinuousScheduler(backend, engine, max_batch=max(args.concurrency)),
        "static": StaticScheduler(backend, max_batch=max(args.concurrency), wait_ms=5),
    }
    results: dict[str, Any] = {"gpu": gpu, "parameters": params, "phases": []}
    ttft = []
    for _ in range(3):
        prediction = backend.predict([request(1024, 1)])[0]
        if prediction.timing is not None:
            ttft.append(prediction.timing.first_token_s)
    results["ttft_1024_s"] = statistics.median(ttft) if ttft else None
    print(f"time to first token, 1024×1024 image: {results['ttft_1024_s']:.3f} s", flush=True)
    draw = random.Random(0)
    for concurrency in args.concurrency:
        load = [request(args.side, draw.choice(lengths)) for _ in range(2 * concurrency)]
        for mode in ("static", "continuous"):
            run_load(schedulers[mode], load[:concurrency], concurrency)  # warm-up
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            rate = run_load(schedulers[mode], load, concurrency)
            context = statistics.mean(lengths) + 300
            phase = {
                "mode": mode,
                "concurrency": concurrency,
                "tokens_per_s": rate,
                "bandwidth_bound_tokens_per_s": bandwidth_bound(
                    backend, concurrency, int(context), args.bandwidth_gbs
                ),
                "peak_memory_gib": peak_memory_gib(device),
            }
            results["phases"].append(phase)
            print(json.dumps(phase), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
