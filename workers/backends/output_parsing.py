"""Turn a GLM-style raw generation into answer, reasoning and boxes.

GLM-4.1V / GLM-4.6V write `<think>…</think>` then the answer, sometimes inside
`<answer>…</answer>`, with grounding boxes between `<|begin_of_box|>` and `<|end_of_box|>`.
Other models write plain text, which passes through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

THINK = re.compile(r"<think>(.*?)</think>", re.S)
ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S)
BOX = re.compile(r"<\|begin_of_box\|>(.*?)<\|end_of_box\|>", re.S)


@dataclass(frozen=True)
class ParsedOutput:
    """The parts of one generation."""

    answer: str
    reasoning: str | None = None
    boxes: list[str] = field(default_factory=list)


def strip_tokens(text: str, tokens: Iterable[str]) -> str:
    """Remove every occurrence of the given special tokens."""
    for token in sorted(set(tokens), key=len, reverse=True):
        if token:
            text = text.replace(token, "")
    return text


def parse_output(raw: str, special_tokens: Iterable[str] = ()) -> ParsedOutput:
    """Split a raw generation (special tokens still in it) into its parts."""
    reasoning = None
    think = THINK.search(raw)
    if think:
        reasoning = think.group(1).strip() or None
        rest = raw[think.end() :]
    elif "</think>" in raw:
        before, rest = raw.split("</think>", 1)
        reasoning = before.replace("<think>", "").strip() or None
    else:
        rest = raw
    answer_match = ANSWER.search(rest)
    answer = answer_match.group(1) if answer_match else rest
    boxes = [box.strip() for box in BOX.findall(rest)]
    answer = answer.replace("<|begin_of_box|>", "").replace("<|end_of_box|>", "")
    markup = ["<think>", "</think>", "<answer>", "</answer>"]
    answer = strip_tokens(answer, [*special_tokens, *markup])
    if reasoning is not None:
        reasoning = strip_tokens(reasoning, special_tokens).strip() or None
    return ParsedOutput(answer=answer.strip(), reasoning=reasoning, boxes=boxes)
