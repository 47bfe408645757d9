"""The `transformers` backend: any Hugging Face VLM (AutoModelForImageTextToText)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from services.core.prompts import GenerationParams
from workers.backends.base import Prediction, PredictRequest
from workers.backends.output_parsing import parse_output
from workers.backends.streaming import BatchTextStreamer

# Markers parsed out of GLM output; the stream shows the text between them.
MARKUP_TOKENS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """`auto` means the first GPU when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TransformersVLM:
    """A VLM served with `transformers` generate; batches are left-padded."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path
        self.device = "cpu"
        self.processor: Any = None
        self.model: Any = None
        self.eos_token_ids: set[int] = set()
        self.special_tokens: list[str] = []

    def setup(self, device: str) -> None:
        """Load processor and weights: bf16 and SDPA attention on a GPU, float32 on the CPU."""
        self.device = resolve_device(device)
        on_gpu = self.device.startswith("cuda")
        self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.processor.tokenizer.padding_side = "left"
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.model_path,
            dtype=torch.bfloat16 if on_gpu else torch.float32,
            attn_implementation="sdpa" if on_gpu else None,
        ).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = {int(token) for token in eos_ids if token is not None}
        if self.processor.tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(int(self.processor.tokenizer.eos_token_id))
        tokenizer = self.processor.tokenizer
        # The reasoning and answer markers are kept for parsing; every other special
        # token (end of text, padding, role markers) is removed from the output.
        self.special_tokens = [
            token
            for token in [*tokenizer.all_special_tokens, *tokenizer.added_tokens_encoder]
            if token not in MARKUP_TOKENS
        ]
        log.info("event=model_loaded path=%s device=%s", self.model_path, self.device)

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Run the batch, one `generate` call per distinct set of generation parameters."""
        predictions: list[Prediction | None] = [None] * len(batch)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(batch):
            groups.setdefault(request.params.model_dump_json(), []).append(index)
        for indexes in groups.values():
            outputs = self.generate([batch[i] for i in indexes], batch[indexes[0]].params)
            for index, prediction in zip(indexes, outputs, strict=True):
                predictions[index] = prediction
        return [prediction for prediction in predictions if prediction is not None]

    def encode(self, conversations: list[list[dict[str, Any]]], params: GenerationParams) -> Any:
        """Tokenize conversations with the model's chat template (images become pixel values)."""
        template_options: dict[str, Any] = {}
        # Only templates that know the switch get it (GLM's); others would pass it on to
        # the processor as an unknown argument.
        if "enable_thinking" in (self.processor.chat_template or ""):
            template_options["enable_thinking"] = params.enable_thinking
        return self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
            **template_options,
        ).to(self.device)

    @torch.inference_mode()
    def generate(
        self, requests: list[PredictRequest], params: GenerationParams
    ) -> list[Prediction]:
        """One batched `generate` for requests that share generation parameters."""
        inputs = self.encode([request.messages for request in requests], params)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        callbacks = [request.on_text for request in requests]
        if any(callbacks):
            kwargs["streamer"] = BatchTextStreamer(
                self.processor.tokenizer,
                callbacks,
                self.eos_token_ids,
                [*self.special_tokens, *MARKUP_TOKENS],
            )
        prompt_length = inputs["input_ids"].shape[1]
        output_ids = self.model.generate(**inputs, **kwargs)
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            self.decode(row[prompt_length:].tolist(), int(prompt_tokens[i]), params)
            for i, row in enumerate(output_ids)
        ]

    def decode(
        self, new_ids: list[int], prompt_tokens: int, params: GenerationParams
    ) -> Prediction:
        """Cut one generated row at its end token or stop string, then parse it."""
        finish_reason = "length"
        for position, token in enumerate(new_ids):
            if token in self.eos_token_ids:
                new_ids = new_ids[:position]
                finish_reason = "stop"
                completion_tokens = position + 1
                break
        else:
            completion_tokens = len(new_ids)
        raw = self.processor.tokenizer.decode(new_ids, skip_special_tokens=False)
        for stop in params.stop:
            if stop in raw:
                raw = raw[: raw.index(stop)]
                finish_reason = "stop"
        parsed = parse_output(raw, self.special_tokens)
        return Prediction(
            answer=parsed.answer,
            raw=raw,
            reasoning=parsed.reasoning,
            boxes=parsed.boxes,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )
