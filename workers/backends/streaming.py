"""Streamed text and token timing: per answer (`RowText`), and for a batched `generate`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from transformers.generation.streamers import BaseStreamer

from workers.backends.base import GenerationTiming, TextCallback, TokenLogprob
from workers.backends.output_parsing import strip_tokens


class RowText:
    """One answer's streamed text: decodes its tokens as they come and reports only the
    visible text that is new (markup and special tokens hidden), with the log-probabilities
    of the tokens that made it."""

    def __init__(
        self, tokenizer: Any, callback: TextCallback, hidden_tokens: Iterable[str]
    ) -> None:
        self.tokenizer = tokenizer
        self.callback = callback
        self.hidden_tokens = list(hidden_tokens)
        self.token_ids: list[int] = []
        self.sent = ""
        self.unsent_logprobs: list[TokenLogprob] = []

    def push(self, token: int, logprob: TokenLogprob | None = None) -> None:
        """Add the next generated token (and its entry, if logprobs were asked for); call
        back with the visible text it completes."""
        self.token_ids.append(int(token))
        if logprob is not None:
            self.unsent_logprobs.append(logprob)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=False)
        visible = strip_tokens(text, self.hidden_tokens).lstrip()
        # A token that only starts a character (or a marker) shows nothing yet.
        if len(visible) > len(self.sent) and visible.startswith(self.sent):
            delta = visible[len(self.sent) :]
            self.sent = visible
            logprobs, self.unsent_logprobs = self.unsent_logprobs, []
            self.callback(delta, logprobs)


class BatchTextStreamer(BaseStreamer):
    """For a batched `generate`: each row's new text goes to its own callback (without
    log-probabilities: a streamer sees token ids only; they come with the result)."""

    def __init__(
        self,
        tokenizer: Any,
        callbacks: list[TextCallback | None],
        end_token_ids: set[int],
        hidden_tokens: Iterable[str],
    ) -> None:
        hidden = list(hidden_tokens)
        self.rows = [
            None if callback is None else RowText(tokenizer, callback, hidden)
            for callback in callbacks
        ]
        self.end_token_ids = end_token_ids
        self.finished = [callback is None for callback in callbacks]
        self.saw_prompt = False

    def put(self, value: Any) -> None:
        """Receive the next token of every row (the first call brings the prompt: skipped)."""
        if not self.saw_prompt:
            self.saw_prompt = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            text = self.rows[row]
            if self.finished[row] or text is None:
                continue
            if token in self.end_token_ids:
                self.finished[row] = True
                continue
            text.push(token)

    def end(self) -> None:
        """Generation finished."""


class TokenClock(BaseStreamer):
    """Times a batched `generate`: when the first token came, and each row's last one.

    Passes every call on to `inner` (the text streamer of streaming requests), since
    `generate` takes one streamer.
    """

    def __init__(
        self, rows: int, end_token_ids: set[int], inner: BaseStreamer | None = None
    ) -> None:
        self.inner = inner
        self.end_token_ids = end_token_ids
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: list[float | None] = [None] * rows
        self.finished = [False] * rows
        self.saw_prompt = False

    def put(self, value: Any) -> None:
        """Note the time of each row's new token (the first call brings the prompt)."""
        if self.inner is not None:
            self.inner.put(value)
        if not self.saw_prompt:
            self.saw_prompt = True
            return
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.finished[row]:
                continue
            if token in self.end_token_ids:
                self.finished[row] = True
                continue
            self.last_at[row] = now

    def end(self) -> None:
        """Generation finished."""
        if self.inner is not None:
            self.inner.end()

    def timing(self, row: int) -> GenerationTiming | None:
        """The row's time to first token and decode time (None if nothing was generated)."""
        if self.first_at is None:
            return None
        last = self.last_at[row] or self.first_at
        return GenerationTiming(self.first_at - self.started, last - self.first_at)
