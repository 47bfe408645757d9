"""A streamer for batched `generate`: each row's new text goes to its own callback."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from transformers.generation.streamers import BaseStreamer

from workers.backends.output_parsing import strip_tokens


class BatchTextStreamer(BaseStreamer):
    """Decodes each row's tokens as they are generated and reports the new visible text."""

    def __init__(
        self,
        tokenizer: Any,
        callbacks: list[Callable[[str], None] | None],
        end_token_ids: set[int],
        hidden_tokens: Iterable[str],
    ) -> None:
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.end_token_ids = end_token_ids
        self.hidden_tokens = list(hidden_tokens)
        self.token_ids: list[list[int]] = [[] for _ in callbacks]
        self.sent: list[str] = ["" for _ in callbacks]
        self.finished = [callback is None for callback in callbacks]
        self.saw_prompt = False

    def put(self, value: Any) -> None:
        """Receive the next token of every row (the first call brings the prompt: skipped)."""
        if not self.saw_prompt:
            self.saw_prompt = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.finished[row]:
                continue
            if token in self.end_token_ids:
                self.finished[row] = True
                continue
            self.token_ids[row].append(int(token))
            text = self.tokenizer.decode(self.token_ids[row], skip_special_tokens=False)
            visible = strip_tokens(text, self.hidden_tokens).lstrip()
            if len(visible) > len(self.sent[row]) and visible.startswith(self.sent[row]):
                delta = visible[len(self.sent[row]) :]
                self.sent[row] = visible
                callback = self.callbacks[row]
                if callback is not None:
                    callback(delta)

    def end(self) -> None:
        """Generation finished."""
