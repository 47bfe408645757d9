"""Continuous batching for the transformers backend: a decode loop of vlmq's own.

`transformers`' own continuous batching takes text `input_ids` only, and nothing there
knows the 3-D rotary positions (M-RoPE) of GLM-4V and Qwen2-VL. Here each request's prompt
and images run once (prefill: its first token and its KV cache), then every active request
decodes one token per batched forward pass, and a request that finishes leaves the batch
at once. The requests that arrived while a step ran are prefilled together before the next
(left-padded, one forward pass).

The batch's KV cache is one `DynamicCache`, left-padded: rows joining pad themselves (or
the batch) to the same length, the attention mask hides the padding, and each row keeps
its own position ids (its real length plus, for M-RoPE, its own `rope_delta` from
`get_rope_index`; nothing is read from state on the model object). Leaving is
`DynamicCache.batch_select_indices`, and the columns that only padded the rows that left
are cut.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from services.core.inputs.prompts import GenerationParams
from workers.backends.base import (
    Generation,
    GenerationTiming,
    Prediction,
    PredictRequest,
    TokenLogprob,
)
from workers.backends.grammar import Grammars, advance
from workers.backends.logprobs import LogprobReader
from workers.backends.streaming import RowText

# How each architecture the engine knows numbers its positions: `mrope`, three rotary
# axes (time, height, width) and a per-request offset of text positions after the image;
# `linear`, one position per token.
POSITION_SCHEMES = {"glm4v": "mrope", "qwen2_vl": "mrope", "llava": "linear"}


def position_scheme(model: Any) -> str | None:
    """The position scheme of a loaded model, or None if the engine does not know it."""
    return POSITION_SCHEMES.get(getattr(model.config, "model_type", ""))


class LoadedModel(Protocol):
    """What the engine uses of the backend that owns it (`TransformersVLM`)."""

    model: Any
    processor: Any
    device: str
    eos_token_ids: set[int]
    logprob_reader: LogprobReader

    @property
    def grammars(self) -> Grammars:
        """The model's compiled grammars (constrained decoding)."""
        ...

    @property
    def hidden_tokens(self) -> list[str]:
        """Tokens never shown in streamed text."""
        ...

    def encode(self, conversations: list[list[dict[str, Any]]], params: GenerationParams) -> Any:
        """Tokenize conversations with the chat template (images become pixel values)."""

    def decode(
        self, new_ids: list[int], prompt_tokens: int, params: GenerationParams
    ) -> Prediction:
        """Cut a generated answer at its end token or stop string, then parse it."""
        ...

    def rows_with(self, adapters: list[str | None]) -> AbstractContextManager[None]:
        """Model calls inside run each row with its LoRA adapter (None: the base model)."""
        ...

    def with_attention(self, request: PredictRequest, prediction: Prediction) -> Prediction:
        """The prediction with its attention maps, when the request asked for them."""
        ...


@dataclass
class Row:
    """One request in the batch: what it asked, how far it is, and where its text goes."""

    key: object
    request: PredictRequest
    prompt_tokens: int
    # Text positions run this far ahead of (M-RoPE: an image's grid uses fewer positions
    # than tokens) or behind the token count.
    rope_delta: int
    # Tokens of this row in the cache (prompt and generated), padding not counted.
    length: int
    generator: torch.Generator | None
    text: RowText | None
    admitted_at: float
    # The row's grammar matcher (structured output); None: a free row.
    matcher: Any = None
    generated: list[int] = field(default_factory=list)
    # The answer's token log-probabilities; None unless the request asked for them.
    logprobs: list[TokenLogprob] | None = None
    first_at: float | None = None
    last_at: float | None = None
    finish_reason: str | None = None
    batch_size: int = 1


class ContinuousEngine:
    """The decode loop's state: the rows, their shared KV cache and its attention mask."""

    def __init__(self, vlm: LoadedModel, scheme: str) -> None:
        self.vlm = vlm
        self.scheme = scheme
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        # 1 for every real token of a row, 0 for its left padding: [rows, cache length].
        self.mask: torch.Tensor | None = None

    def __len__(self) -> int:
        """How many requests are in the batch."""
        return len(self.rows)

    def accepts(self, request: PredictRequest) -> bool:
        """Generation requests run here; moderation scoring keeps its one-pass `predict`."""
        return request.params.score_questions is None

    @torch.inference_mode()
    def admit(self, requests: list[tuple[object, PredictRequest]]) -> list[Generation]:
        """Prefill the requests together (left-padded, in one forward pass per chat-template
        switch), pick each one's first token, and join the unfinished ones to the batch."""
        groups: dict[bool, list[tuple[object, PredictRequest]]] = {}
        for key, request in requests:
            groups.setdefault(request.params.enable_thinking, []).append((key, request))
        finished: list[Generation] = []
        for group in groups.values():
            finished += self._prefill(group)
        return finished

    def _prefill(self, requests: list[tuple[object, PredictRequest]]) -> list[Generation]:
        """One forward pass over the prompts of requests that share a chat template."""
        inputs = self.vlm.encode(
            [request.messages for _, request in requests], requests[0][1].params
        )
        mask = inputs["attention_mask"]
        positions, deltas = self._prompt_positions(inputs)
        with self.vlm.rows_with([request.adapter for _, request in requests]):
            output = self.vlm.model(
                **inputs, position_ids=positions, use_cache=True, logits_to_keep=1
            )
        admitted_at = time.perf_counter()
        rows = [
            self._new_row(key, request, int(mask[index].sum()), deltas[index], admitted_at)
            for index, (key, request) in enumerate(requests)
        ]
        logits = output.logits[:, -1]
        self._constrain(logits, rows)
        for index, row in enumerate(rows):
            self._take(row, logits[index])
        joining = [index for index, row in enumerate(rows) if row.finish_reason is None]
        if joining:
            cache: DynamicCache = output.cache
            if len(joining) < len(rows):
                cache.batch_select_indices(torch.tensor(joining, device=mask.device))
            self._join([rows[i] for i in joining], cache, mask[joining])
        return [self._finished(row) for row in rows if row.finish_reason is not None]

    def _new_row(
        self, key: object, request: PredictRequest, length: int, rope_delta: int, at: float
    ) -> Row:
        params = request.params
        generator = None
        if params.temperature > 0:
            # Each request its own generator: a seed repeats whatever shares its steps.
            generator = torch.Generator(device=self.vlm.device)
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        text = None
        if request.on_text is not None:
            text = RowText(self.vlm.processor.tokenizer, request.on_text, self.vlm.hidden_tokens)
        matcher = None
        if params.grammar is not None:
            matcher = self.vlm.grammars.matcher(params.grammar)
        return Row(
            key=key,
            request=request,
            prompt_tokens=length,
            rope_delta=rope_delta,
            length=length,
            generator=generator,
            text=text,
            admitted_at=at,
            logprobs=[] if params.logprobs else None,
            matcher=matcher,
        )

    @torch.inference_mode()
    def step(self) -> list[Generation]:
        """One batched forward pass: the next token of every row."""
        if not self.rows or self.cache is None or self.mask is None:
            return []
        count = len(self.rows)
        device = self.vlm.device
        input_ids = torch.tensor([[row.generated[-1]] for row in self.rows], device=device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((count, 1))], dim=1)
        positions = torch.tensor(
            [[row.length + row.rope_delta] for row in self.rows], device=device
        )
        if self.scheme == "mrope":
            positions = positions.unsqueeze(0).expand(3, count, 1)
        with self.vlm.rows_with([row.request.adapter for row in self.rows]):
            output = self.vlm.model(
                input_ids=input_ids,
                attention_mask=self.mask,
                position_ids=positions,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        logits = output.logits[:, -1]
        self._constrain(logits, self.rows)
        # Every row's greedy choice in one call (sampled rows pick their own).
        greedy = torch.argmax(logits, dim=-1).tolist()
        for index, row in enumerate(self.rows):
            row.length += 1
            row.batch_size = max(row.batch_size, count)
            self._take(row, logits[index], greedy[index])
        done = [row for row in self.rows if row.finish_reason is not None]
        if done:
            self._keep([i for i, row in enumerate(self.rows) if row.finish_reason is None])
        return [self._finished(row) for row in done]

    def _constrain(self, logits: torch.Tensor, rows: list[Row]) -> None:
        """Mask the logits of the rows under a grammar (structured output)."""
        matchers = [row.matcher for row in rows]
        if any(matcher is not None for matcher in matchers):
            self.vlm.grammars.mask(logits, matchers)

    def drop(self, key: object) -> None:
        """Take a request out of the batch unfinished."""
        self._keep([i for i, row in enumerate(self.rows) if row.key != key])

    def clear(self) -> None:
        """Take every request out."""
        self.rows, self.cache, self.mask = [], None, None

    def _prompt_positions(self, inputs: Any) -> tuple[torch.Tensor, list[int]]:
        """The prompts' position ids (left padding skipped) and each row's rope delta."""
        input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
        count = input_ids.shape[0]
        linear = (mask.long().cumsum(dim=-1) - 1).clamp_min(0)
        if self.scheme == "linear":
            return linear, [0] * count
        grids = {
            name: inputs[name]
            for name in ("image_grid_thw", "video_grid_thw")
            if inputs.get(name) is not None
        }
        if not grids:  # text only: the three axes advance together
            return linear.unsqueeze(0).expand(3, count, -1), [0] * count
        positions, deltas = self.vlm.model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=inputs.get("mm_token_type_ids"),
            attention_mask=mask,
            **grids,
        )
        return positions, [int(delta) for delta in deltas.reshape(-1).tolist()]

    def _pick(self, row: Row, logits: torch.Tensor, greedy: int | None = None) -> int:
        """The row's next token: greedy (`greedy`, when the batch's argmax already gave it),
        or sampled with its temperature, top_p and seed."""
        params = row.request.params
        held = len(row.generated) < params.min_tokens and bool(self.vlm.eos_token_ids)
        if row.generator is None and greedy is not None and not held:
            return greedy
        logits = logits.float()
        if held:
            logits = logits.clone()
            logits[list(self.vlm.eos_token_ids)] = float("-inf")
        if row.generator is None:
            return int(torch.argmax(logits))
        probabilities = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            ordered, order = torch.sort(probabilities, descending=True)
            # Keep the smallest set of tokens whose probability reaches top_p.
            outside = ordered.cumsum(dim=-1) - ordered > params.top_p
            ordered = ordered.masked_fill(outside, 0.0)
            probabilities = torch.zeros_like(probabilities).scatter(0, order, ordered)
        return int(torch.multinomial(probabilities, 1, generator=row.generator))

    def _take(self, row: Row, logits: torch.Tensor, greedy: int | None = None) -> None:
        """Pick and record the row's next token; decide whether it finished the answer."""
        token = self._pick(row, logits, greedy)
        advance(row.matcher, token)
        params = row.request.params
        now = time.perf_counter()
        row.first_at = row.first_at or now
        row.last_at = now
        row.generated.append(token)
        if token in self.vlm.eos_token_ids and not params.ignore_eos:
            row.finish_reason = "stop"
            return
        entry = None
        if row.logprobs is not None:
            entry = self.vlm.logprob_reader.answer_entry(logits, token, params.top_logprobs)
            if entry is not None:
                row.logprobs.append(entry)
        if row.text is not None:
            row.text.push(token, entry)
        if params.stop:
            # Only a stop string that ends in the new token is new: a tail long enough to
            # hold one is decoded, not the whole answer (a character takes at most 4 byte
            # tokens).
            window = 4 * max(len(stop) for stop in params.stop) + 4
            tail = row.generated[-window:]
            text = self.vlm.processor.tokenizer.decode(tail, skip_special_tokens=False)
            if any(stop in text for stop in params.stop):
                row.finish_reason = "stop"
                return
        if len(row.generated) >= params.max_tokens:
            row.finish_reason = "length"

    def _finished(self, row: Row) -> Generation:
        """The row's prediction, cut and parsed like a `generate` answer."""
        prediction = self.vlm.decode(row.generated, row.prompt_tokens, row.request.params)
        timing = None
        if row.first_at is not None and row.last_at is not None:
            timing = GenerationTiming(row.first_at - row.admitted_at, row.last_at - row.first_at)
        prediction = dataclasses.replace(prediction, timing=timing, logprobs=row.logprobs)
        prediction = self.vlm.with_attention(row.request, prediction)
        return Generation(row.key, prediction, row.batch_size)

    def _join(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add prefilled rows (their cache and mask) to the batch, left-padding them or the
        batch to one length."""
        check_layers(cache)
        mask = mask.long()
        if self.cache is None or self.mask is None:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        batch_pad, rows_pad = width - self.mask.shape[1], width - mask.shape[1]
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([left_pad(mine.keys, batch_pad), left_pad(theirs.keys, rows_pad)])
            mine.values = torch.cat(
                [left_pad(mine.values, batch_pad), left_pad(theirs.values, rows_pad)]
            )
        self.mask = torch.cat(
            [left_pad(self.mask, batch_pad, dim=1), left_pad(mask, rows_pad, dim=1)]
        )
        self.rows += rows

    def _keep(self, indexes: list[int]) -> None:
        """Keep only these rows, and cut the padding columns no remaining row needs."""
        if not indexes:
            self.clear()
            return
        if len(indexes) == len(self.rows):
            return
        assert self.cache is not None and self.mask is not None
        self.rows = [self.rows[i] for i in indexes]
        selected = torch.tensor(indexes, device=self.mask.device)
        self.cache.batch_select_indices(selected)
        self.mask = self.mask[selected]
        unused = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())
        if unused:
            self.mask = self.mask[:, unused:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, unused:, :]
                layer.values = layer.values[:, :, unused:, :]


def left_pad(tensor: torch.Tensor, count: int, dim: int = 2) -> torch.Tensor:
    """`count` zeros before the tensor along `dim` (a cache's sequence axis by default)."""
    if count == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = count
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def check_layers(cache: DynamicCache) -> None:
    """The engine pads and cuts full-attention layers only (no sliding window, no
    quantized or offloaded layers)."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise NotImplementedError(f"continuous batching cannot pad a {type(layer).__name__}")
