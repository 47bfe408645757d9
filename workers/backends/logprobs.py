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
