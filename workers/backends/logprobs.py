"""Token log-probabilities in OpenAI's shape (`choices[].logprobs.content[]`).

Each generated token gets the log-probability the model gave it and, when asked, the
`top_logprobs` most likely tokens at that step. They come from the model's raw logits
(before temperature, top_p or `min_tokens` masking, as vLLM reports them by default), so a
request's numbers do not depend on how it was sampled or batched.
"""

from __future__ import annotations

from typing import Any

import torch

from workers.backends.base import TokenLogprob


class LogprobReader:
    """Turns logits into entries, with the tokenizer's text of each token."""

    def __init__(self, tokenizer: Any, hidden_tokens: list[str]) -> None:
        self.tokenizer = tokenizer
        self.hidden = set(hidden_tokens)
        self.texts: dict[int, str] = {}

    def text(self, token: int) -> str:
        """The token as text (special tokens spelled out), cached per id."""
        if token not in self.texts:
            self.texts[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return self.texts[token]

    def is_hidden(self, token: int) -> bool:
        """Markup and special tokens are no part of the answer's text, nor of its logprobs."""
        return self.text(token) in self.hidden

    def answer_entry(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob | None:
        """The entry of an answer's token, or None for markup and special tokens."""
        return None if self.is_hidden(token) else self.entry(logits, token, top)

    def answer(
        self, new_ids: list[int], step_logits: list[torch.Tensor], end_tokens: set[int], top: int
    ) -> list[TokenLogprob]:
        """The entries of a generated answer (one logits row per step), up to its end token."""
        entries = []
        for token, logits in zip(new_ids, step_logits, strict=False):
            if token in end_tokens:
                break
            entry = self.answer_entry(logits, token, top)
            if entry is not None:
                entries.append(entry)
        return entries

    def entry(self, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
        """The entry of `token` chosen after `logits` (one row), with its `top` alternatives."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        alternatives: list[TokenLogprob] = []
        if top:
            values, ids = torch.topk(logprobs, top)
            alternatives = [
                self.brief(int(alternative), float(value))
                for value, alternative in zip(values.tolist(), ids.tolist(), strict=True)
            ]
        return {**self.brief(token, float(logprobs[token])), "top_logprobs": alternatives}

    def brief(self, token: int, logprob: float) -> TokenLogprob:
        """`token`, `logprob` and `bytes` of one token."""
        text = self.text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
