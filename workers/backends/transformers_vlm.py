"""The `transformers` backend: any Hugging Face VLM (AutoModelForImageTextToText)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as transformers_logging

from services.core.inputs.prompts import GenerationParams, image_parts
from workers.backends.attention import eager_attention, image_grids, image_maps
from workers.backends.base import DecodeEngine, Prediction, PredictRequest
from workers.backends.chat_prompts import ChatPrompts
from workers.backends.continuous import ContinuousEngine, position_scheme
from workers.backends.grammar import GrammarLogitsProcessor, Grammars
from workers.backends.logprobs import LogprobReader
from workers.backends.output_parsing import parse_output
from workers.backends.streaming import BatchTextStreamer, TokenClock

# Markers parsed out of GLM output; the stream shows the text between them.
MARKUP_TOKENS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
]

log = structlog.get_logger(__name__)
# PEFT's name for "no adapter" in a mixed-adapter batch.
BASE_ADAPTER = "__base__"


def resolve_device(device: str) -> str:
    """`auto` means the first GPU when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TransformersVLM:
    """A VLM served with `transformers`: continuous batching where the engine knows the
    architecture (`continuous_engine`), else batched `generate` calls, left-padded.

    LoRA adapters (`adapters`, name -> PEFT adapter folder) load on top of the base model;
    every model call names each row's adapter, so one call mixes adapters and the base.
    """

    def __init__(
        self,
        model_path: str,
        batching: str = "continuous",
        adapters: dict[str, str] | None = None,
    ) -> None:
        self.model_path = model_path
        self.batching = batching
        self.adapter_paths = dict(adapters or {})
        # The PEFT model wrapping `model` once adapters are loaded (their layers are
        # injected into `model` itself).
        self.peft: Any = None
        # The adapter of each row of the model call under way (see `rows_with`).
        self.row_adapters: list[str] = []
        self.engine: ContinuousEngine | None = None
        self.device = "cpu"
        self.processor: Any = None
        self.prompts: ChatPrompts
        self.model: Any = None
        self.eos_token_ids: set[int] = set()
        self.special_tokens: list[str] = []
        self.logprob_reader: LogprobReader
        # The width of the model's logits (its vocabulary, padding included).
        self.vocab_size = 0
        self._grammars: Grammars | None = None

    def setup(self, device: str) -> None:
        """Load processor and weights: bf16 and SDPA attention on a GPU, float32 on the CPU."""
        # transformers' own lines go through vlmq's log format; no progress bars in a log.
        transformers_logging.disable_default_handler()
        transformers_logging.enable_propagation()
        transformers_logging.disable_progress_bar()
        device = resolve_device(device)
        on_gpu = device.startswith("cuda")
        processor = AutoProcessor.from_pretrained(self.model_path)
        model = AutoModelForImageTextToText.from_pretrained(
            self.model_path,
            dtype=torch.bfloat16 if on_gpu else torch.float32,
            attn_implementation="sdpa" if on_gpu else None,
        ).to(device)
        self.adopt(processor, model, device)
        self.load_adapters()

    def load_adapters(self) -> None:
        """Load the LoRA adapters onto the base model (once per worker).

        Each LoRA layer (and each trained copy of a whole module) gets one pre-forward hook
        for good, which hands it the adapter names of the rows of the call under way: PEFT's
        own `adapter_names` argument, without PEFT registering hooks on every module at every
        call (which costs more than a decode step of a small model).
        """
        if not self.adapter_paths:
            return
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        (first, first_path), *others = self.adapter_paths.items()
        peft = PeftModel.from_pretrained(self.model, first_path, adapter_name=first)
        for name, path in others:
            peft.load_adapter(path, adapter_name=name)
        self.peft = peft.eval()
        module: torch.nn.Module
        for module in self.model.modules():
            if isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper)):
                module.register_forward_pre_hook(self._pass_adapter_names, with_kwargs=True)
        log.info("adapters_loaded", adapters=self.adapter_paths)

    def _pass_adapter_names(
        self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs["adapter_names"] = self.row_adapters
        return args, kwargs

    @contextmanager
    def rows_with(self, adapters: list[str | None]) -> Iterator[None]:
        """The model calls inside run row i with adapter `adapters[i]` (None: the base).

        With adapters loaded every model call must come through here: a LoRA layer told
        nothing would answer every row with the first adapter.
        """
        unknown = sorted({name for name in adapters if name and name not in self.adapter_paths})
        if unknown:
            raise ValueError(f"no such adapters are loaded: {unknown}")
        previous = self.row_adapters
        self.row_adapters = [name or BASE_ADAPTER for name in adapters]
        try:
            yield
        finally:
            self.row_adapters = previous

    def adopt(self, processor: Any, model: Any, device: str) -> None:
        """Serve this processor and model, already on `device` (`setup` loads them; a
        benchmark may build a model in memory instead)."""
        self.device = device
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.prompts = ChatPrompts(processor)
        self.model = model.eval()
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
        self.logprob_reader = LogprobReader(tokenizer, self.hidden_tokens)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._grammars = None
        scheme = position_scheme(self.model)
        if self.batching == "continuous" and scheme is not None:
            self.engine = ContinuousEngine(self, scheme)
        log.info(
            "model_loaded",
            path=self.model_path,
            device=self.device,
            model_type=self.model.config.model_type,
            # Which path serves: `static` where continuous was asked for an architecture
            # the engine does not know.
            batching="continuous" if self.engine is not None else "static",
        )

    @property
    def hidden_tokens(self) -> list[str]:
        """Tokens never shown in streamed text (special tokens and GLM's markup)."""
        return [*self.special_tokens, *MARKUP_TOKENS]

    @property
    def grammars(self) -> Grammars:
        """The model's grammars (structured output), set up on the first request for one."""
        if self._grammars is None:
            self._grammars = Grammars(self.processor.tokenizer, self.vocab_size, self.eos_token_ids)
        return self._grammars

    def continuous_engine(self) -> DecodeEngine | None:
        """The continuous-batching engine, or None where this model runs static batches."""
        return self.engine

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Run the batch, one `generate` call per distinct set of generation parameters."""
        predictions: list[Prediction | None] = [None] * len(batch)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(batch):
            # Rows under different grammars share a call (each row is masked by its own), and
            # so do rows that ask for their attention (it is read after the call) and not.
            shared = request.params.model_copy(update={"grammar": None, "attention": False})
            key = shared.model_dump_json()
            groups.setdefault(key, []).append(index)
        for indexes in groups.values():
            params = batch[indexes[0]].params
            if params.score_questions:
                outputs = self.score([batch[i] for i in indexes], params.score_questions)
            else:
                outputs = self.generate([batch[i] for i in indexes], params)
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
        return self.prompts.encode(conversations, template_options).to(self.device)

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
        if params.min_tokens:
            kwargs["min_new_tokens"] = params.min_tokens
        end_tokens = self.eos_token_ids
        if params.ignore_eos:
            # No end token stops the answer: it runs to max_tokens.
            kwargs["eos_token_id"] = []
            end_tokens = set()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        callbacks = [request.on_text for request in requests]
        text_streamer = (
            BatchTextStreamer(self.processor.tokenizer, callbacks, end_tokens, self.hidden_tokens)
            if any(callbacks)
            else None
        )
        clock = TokenClock(len(requests), end_tokens, inner=text_streamer)
        kwargs["streamer"] = clock
        grammars = [request.params.grammar for request in requests]
        if any(grammars):
            matchers = [g and self.grammars.matcher(g) for g in grammars]
            kwargs["logits_processor"] = [GrammarLogitsProcessor(self.grammars, matchers)]
        if params.logprobs:
            # The raw logits of every step (not the processed scores: see `logprobs`).
            kwargs.update(return_dict_in_generate=True, output_logits=True)
        prompt_length = inputs["input_ids"].shape[1]
        with self.rows_with([request.adapter for request in requests]):
            output = self.model.generate(**inputs, **kwargs)
        output_ids = output.sequences if params.logprobs else output
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        predictions = []
        for i, row in enumerate(output_ids):
            prediction = self.decode(
                row[prompt_length:].tolist(), int(prompt_tokens[i]), requests[i].params
            )
            logprobs = None
            if params.logprobs:
                logprobs = self.logprob_reader.answer(
                    row[prompt_length:].tolist(),
                    [step_logits[i] for step_logits in output.logits],
                    end_tokens,
                    params.top_logprobs,
                )
            prediction = dataclasses.replace(prediction, timing=clock.timing(i), logprobs=logprobs)
            predictions.append(self.with_attention(requests[i], prediction))
        return predictions

    def score(self, requests: list[PredictRequest], questions: dict[str, str]) -> list[Prediction]:
        """Moderation: P("yes") of every category question about every request."""
        asked = [
            PredictRequest(
                with_question(request.messages, question), request.params, adapter=request.adapter
            )
            for request in requests
            for question in questions.values()
        ]
        probabilities = self.yes_probability(asked)
        names = list(questions)
        return [
            Prediction(
                answer="",
                raw="",
                scores={
                    name: round(probabilities[row * len(names) + column], 6)
                    for column, name in enumerate(names)
                },
            )
            for row in range(len(requests))
        ]

    @torch.inference_mode()
    def yes_probability(self, requests: list[PredictRequest]) -> list[float]:
        """P("yes") among {yes, no} as the first answer token, from one forward pass per batch.

        No generation: the prompt runs once and the next-token distribution is read at its
        last position (left padding puts every row's last token there).
        """
        yes_ids, no_ids = self.yes_no_ids
        inputs = self.encode([request.messages for request in requests], requests[0].params)
        with self.rows_with([request.adapter for request in requests]):
            logits = self.model(**inputs).logits[:, -1, :].float()
        probabilities = torch.softmax(logits, dim=-1)
        p_yes = probabilities[:, yes_ids].sum(dim=-1)
        p_no = probabilities[:, no_ids].sum(dim=-1)
        result: list[float] = (p_yes / (p_yes + p_no).clamp_min(1e-12)).tolist()
        return result

    @functools.cached_property
    def yes_no_ids(self) -> tuple[list[int], list[int]]:
        """The token ids of "yes" and of "no", worked out on the first scoring call and kept
        (encoding their spellings on every call was 3 % of a worker's model time in bulk
        moderation)."""
        return self.answer_token_ids("yes"), self.answer_token_ids("no")

    def answer_token_ids(self, word: str) -> list[int]:
        """Ids of the single tokens that spell `word` at the start of an answer, in any case."""
        tokenizer = self.processor.tokenizer
        ids: set[int] = set()
        for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
                ids.add(int(encoded[0]))
        if not ids:
            raise ValueError(f"the tokenizer has no single token for {word!r}")
        return sorted(ids)

    def decode(
        self, new_ids: list[int], prompt_tokens: int, params: GenerationParams
    ) -> Prediction:
        """Cut one generated row at its end token or stop string, then parse it."""
        finish_reason = "length"
        end_tokens = set() if params.ignore_eos else self.eos_token_ids
        for position, token in enumerate(new_ids):
            if token in end_tokens:
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
            token_ids=list(new_ids),
        )

    @torch.inference_mode()
    def with_attention(self, request: PredictRequest, prediction: Prediction) -> Prediction:
        """The prediction with its attention map over each image (`workers.backends.
        attention`), when the request asked for one and has images; else as it is."""
        if not request.params.attention:
            return prediction
        inputs = self.encode([request.messages], request.params)
        image_token = int(self.model.config.image_token_id)
        images = len(image_parts(request.messages))
        if not images:
            return dataclasses.replace(prediction, attention=[])
        grids, merge = image_grids(self.model, inputs, image_token, images)
        prompt_length = inputs["input_ids"].shape[1]
        # An image or video token in the answer (a model may say one) would ask the model for
        # one more image's features: it is read as padding here.
        media = {image_token, getattr(self.model.config, "video_token_id", None)}
        pad = int(self.processor.tokenizer.pad_token_id or 0)
        answer_ids = [pad if token in media else token for token in prediction.token_ids]
        answer = torch.tensor([answer_ids], device=self.device, dtype=torch.long)
        extended = dict(inputs)
        extended["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
        for name in ("attention_mask", "mm_token_type_ids"):
            if name in inputs:
                fill = torch.ones_like if name == "attention_mask" else torch.zeros_like
                extended[name] = torch.cat([inputs[name], fill(answer)], dim=1)
        with eager_attention(self.model), self.rows_with([request.adapter]):
            output = self.model(**extended, output_attentions=True)
        # The positions that produced the answer's tokens: from the prompt's last one (at
        # least that one: an answer may be its end token alone).
        answer_from = prompt_length - 1
        answer_to = answer_from + max(1, len(prediction.token_ids))
        maps = image_maps(
            output.attentions,
            extended["input_ids"][0],
            image_token,
            grids,
            merge,
            answer_from,
            answer_to,
        )
        # The map's pass ran the prompt and the answer once more: its tenant pays for it.
        extra = prediction.extra_tokens + int(extended["input_ids"].shape[1])
        return dataclasses.replace(prediction, attention=maps, extra_tokens=extra)


def with_question(messages: list[dict[str, Any]], question: str) -> list[dict[str, Any]]:
    """The conversation with `question` appended to its last message."""
    *earlier, last = messages
    content = last["content"]
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    return [*earlier, {**last, "content": [*parts, {"type": "text", "text": question}]}]
