"""Constrained decoding: each row's grammar as a mask over the model's next-token logits.

A request's `Grammar` (a JSON schema, any JSON object, a regular expression or a fixed list
of choices) is compiled by llguidance against the model's tokenizer, once per distinct
grammar (`Grammars.compiled`, cached by the grammar's hash), and every constrained row of a
model call gets a matcher of its own. Before a row's token is picked, the tokens its grammar
cannot take next are set to -inf (`Grammars.mask`: one bitmask for the whole call, one row
each); the picked token then advances its matcher (`advance`). Rows without a grammar are
left as they are, so constrained and free rows, and rows under different grammars, share a
call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import structlog
import torch
from transformers import LogitsProcessor

from services.core.inputs.grammars import Grammar, llguidance_grammar

log = structlog.get_logger(__name__)
# Compiled grammars kept per model (a compiled grammar is small; compiling one is not).
COMPILED_CACHE_SIZE = 256


class UnconstrainableTokenizer(ValueError):
    """The model's tokenizer gives tokens whose text depends on their neighbours."""


def tokenizer_for_grammars(tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> Any:
    """llguidance's view of the model's tokenizer: the bytes each token adds to the text.

    Byte-level and SentencePiece tokenizers (every real VLM's) are read by llguidance itself.
    A word-level tokenizer (the bundled model's) must decode by plain concatenation
    (`glm4v_builder.spelling_vocabulary`): one that puts spaces between words cannot be
    constrained, and says so.
    """
    backend = tokenizer.backend_tokenizer
    if type(backend.model).__name__ != "WordLevel":
        return llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=sorted(stop_ids)
        )
    if type(backend.decoder).__name__ != "Fuse":
        raise UnconstrainableTokenizer(
            "this model's word-level tokenizer puts spaces between its words, so its tokens' "
            "text depends on their neighbours and no grammar can constrain it"
        )
    special = set(tokenizer.all_special_ids)
    texts = [
        b"" if token in special else tokenizer.decode([token]).encode("utf-8")
        for token in range(len(tokenizer))
    ]
    texts += [b""] * (vocab_size - len(texts))
    return llguidance.LLTokenizer(
        llguidance.TokenizerWrapper(SpelledTokens(texts, sorted(stop_ids), sorted(special))),
        n_vocab=vocab_size,
        eos_token=sorted(stop_ids),
    )


@dataclass
class SpelledTokens:
    """A tokenizer as llguidance's `TokenizerWrapper` reads it: each token's bytes, and a
    greedy longest-match encoder (llguidance tokenizes forced text with it)."""

    tokens: list[bytes]
    stop_ids: list[int]
    special_token_ids: list[int]
    index: dict[bytes, int] = field(init=False)
    longest: int = field(init=False)

    @property
    def eos_token_id(self) -> int:
        """The first end-of-text token."""
        return self.stop_ids[0]

    @property
    def bos_token_id(self) -> None:
        """No beginning-of-text token."""
        return None

    def __post_init__(self) -> None:
        self.index: dict[bytes, int] = {}
        for token, text in enumerate(self.tokens):
            if text and token not in self.special_token_ids:
                self.index.setdefault(text, token)
        self.longest = max(len(text) for text in self.tokens)

    def __call__(self, text: bytes) -> list[int]:
        """Greedy longest-match tokenization of `text`."""
        ids, at = [], 0
        while at < len(text):
            for end in range(min(len(text), at + self.longest), at, -1):
                token = self.index.get(text[at:end])
                if token is not None:
                    ids.append(token)
                    at = end
                    break
            else:
                raise ValueError(f"no token spells {text[at : at + 1]!r}")
        return ids


class Grammars:
    """The grammars of one model: compiled against its tokenizer, cached by hash."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> None:
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer_for_grammars(tokenizer, vocab_size, stop_ids)
        self.compiled = functools.lru_cache(maxsize=COMPILED_CACHE_SIZE)(self._compile)

    def _compile(self, grammar: Grammar) -> Any:
        """A matcher in its start state, to copy for each row (see `matcher`).

        The API refused every grammar llguidance cannot compile; one that compiles alone
        but not against this tokenizer gives a matcher in its error state, which lets only
        the end of text through: its row ends at once, and the rows beside it are unharmed.
        """
        matcher = llguidance.LLMatcher(self.tokenizer, llguidance_grammar(grammar), log_level=0)
        if matcher.is_error():
            log.warning("grammar_not_compiled", kind=grammar.kind, error=matcher.get_error())
        return matcher

    def matcher(self, grammar: Grammar) -> Any:
        """A fresh matcher of `grammar` for one row."""
        return self.compiled(grammar).deep_copy()

    def mask(self, logits: torch.Tensor, matchers: list[Any]) -> None:
        """Set to -inf, in place, the logits ([rows, vocab]) of every token a row's grammar
        cannot take next (`matchers[i]`: row i's matcher, None for a free row). One bitmask
        serves the whole call. Its rows are computed one after the other: llguidance's thread
        pool spins on the cores torch's own threads need for the model, and costs more than
        it saves (a mask takes microseconds)."""
        constrained = [i for i, matcher in enumerate(matchers) if matcher is not None]
        if not constrained:
            return
        bitmask = llguidance.torch.allocate_token_bitmask(len(constrained), self.vocab_size)
        for slot, row in enumerate(constrained):
            llguidance.torch.fill_next_token_bitmask(matchers[row], bitmask, slot)
        allowed = unpack_bitmask(bitmask, logits.shape[-1]).to(logits.device)
        rows = torch.tensor(constrained, device=logits.device)
        logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))


def advance(matcher: Any, token: int) -> None:
    """The row picked `token`: its matcher moves on (once it stopped, nothing is left)."""
    if matcher is not None and not matcher.is_stopped():
        matcher.consume_token(token)


class GrammarLogitsProcessor(LogitsProcessor):
    """`generate`'s logits processor for a static batch: each row masked by its matcher."""

    def __init__(self, grammars: Grammars, matchers: list[Any]) -> None:
        self.grammars = grammars
        self.matchers = matchers
        self.started = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Advance each matcher by its row's last token (from the second step on), then mask."""
        if self.started:
            for matcher, token in zip(self.matchers, input_ids[:, -1].tolist(), strict=True):
                advance(matcher, int(token))
        self.started = True
        self.grammars.mask(scores, self.matchers)
        return scores


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """llguidance's packed bitmask ([rows, words] int32, bit i of word w: token 32w+i) as
    booleans [rows, vocab_size]."""
    bits = torch.arange(32, dtype=torch.int32)
    unpacked = (bitmask.unsqueeze(-1) >> bits) & 1
    return unpacked.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()
