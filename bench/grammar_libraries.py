"""llguidance against xgrammar on the CPU: compile time and the time of one token mask.

    .venv/bin/pip install xgrammar   # not a vlmq dependency: only this comparison uses it
    .venv/bin/python -m bench.grammar_libraries

Both libraries get the same vocabulary (as raw token strings) and the same schema, and walk
the same valid answer token by token: one mask computed and one token consumed per step,
as a worker does for a constrained row. Two vocabularies: the bundled model's (155 tokens)
and a synthetic one the size of Qwen2.5-VL's (151,665 tokens: every printable character
plus random 2-8 character strings), where the mask is the cost. Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import time
from collections.abc import Callable
from typing import Any

import llguidance
import llguidance.torch
import torch

from workers.backends.grammar import SpelledTokens

SCHEMA = {
    "type": "object",
    "properties": {
        "total": {"type": "number"},
        "tax_number": {"type": "string", "maxLength": 20},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
                "required": ["name", "price"],
                "additionalProperties": False,
            },
        },
        "paid": {"type": "boolean"},
    },
    "required": ["total", "tax_number", "items", "paid"],
    "additionalProperties": False,
}
ANSWER = (
    '{"total":42.5,"tax_number":"GB123456789",'
    '"items":[{"name":"red circle","price":20},{"name":"teal square","price":22.5}],'
    '"paid":true}'
)


def bundled_vocabulary() -> list[str]:
    """The bundled model's tokens as text ("" for special tokens)."""
    from transformers import AutoTokenizer

    from services.core.config import BUNDLED_MODEL_DIR

    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_MODEL_DIR)
    special = set(tokenizer.all_special_ids)
    return ["" if t in special else tokenizer.decode([t]) for t in range(len(tokenizer))]


def synthetic_vocabulary(size: int, seed: int = 0) -> list[str]:
    """An end-of-text token, every printable character, then random strings."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + ' .,:"{}[]_-'
    tokens = ["", *(chr(c) for c in range(0x20, 0x7F))]
    seen = set(tokens)
    while len(tokens) < size:
        token = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 8)))
        if token not in seen:
            seen.add(token)
            tokens.append(token)
    return tokens


def answer_tokens(vocab: list[str]) -> list[int]:
    """The answer, tokenized longest match first."""
    tokens = SpelledTokens([t.encode() for t in vocab], [0], [0])
    return tokens(ANSWER.encode())


def time_llguidance(vocab: list[str], answer: list[int]) -> tuple[float, float]:
    """(compile seconds, seconds per mask + consume) with llguidance."""
    tokens = SpelledTokens([t.encode() for t in vocab], [0], [0])
    tokenizer = llguidance.LLTokenizer(
        llguidance.TokenizerWrapper(tokens), n_vocab=len(vocab), eos_token=0
    )
    start = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(SCHEMA), defaults={"whitespace_flexible": False}
    )
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    compiled = time.perf_counter() - start
    bitmask = llguidance.torch.allocate_token_bitmask(1, len(vocab))
    start = time.perf_counter()
    for token in answer:
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        assert matcher.consume_token(token), matcher.get_error()
    return compiled, (time.perf_counter() - start) / len(answer)


def time_xgrammar(vocab: list[str], answer: list[int]) -> tuple[float, float]:
    """(compile seconds, seconds per mask + consume) with xgrammar."""
    import xgrammar

    info = xgrammar.TokenizerInfo(vocab, vocab_size=len(vocab), stop_token_ids=[0])
    start = time.perf_counter()
    compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    compiled_grammar = compiler.compile_json_schema(
        json.dumps(SCHEMA), any_whitespace=False, separators=(",", ":")
    )
    matcher = xgrammar.GrammarMatcher(compiled_grammar)
    compiled = time.perf_counter() - start
    bitmask = xgrammar.allocate_token_bitmask(1, len(vocab))
    start = time.perf_counter()
    for token in answer:
        matcher.fill_next_token_bitmask(bitmask, 0)
        assert matcher.accept_token(token)
    return compiled, (time.perf_counter() - start) / len(answer)


def main(argv: list[str] | None = None) -> None:
    """Print each library's compile time and per-token mask time, per vocabulary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    libraries: dict[str, Callable[[list[str], list[int]], tuple[float, float]]] = {
        "llguidance": time_llguidance
    }
    try:
        import xgrammar  # noqa: F401

        libraries["xgrammar"] = time_xgrammar
    except ImportError:
        print("xgrammar is not installed: `.venv/bin/pip install xgrammar` to compare")
    vocabularies = {
        "bundled (155 tokens)": bundled_vocabulary(),
        "synthetic (151,665 tokens)": synthetic_vocabulary(151_665),
    }
    print(f"schema: {len(json.dumps(SCHEMA))} bytes; answer: {len(ANSWER)} characters")
    for label, vocab in vocabularies.items():
        answer = answer_tokens(vocab)
        results: dict[str, Any] = {}
        for name, measure in libraries.items():
            runs = [measure(vocab, answer) for _ in range(args.repeats)]
            results[name] = (
                statistics.median(run[0] for run in runs),
                statistics.median(run[1] for run in runs),
            )
        print(f"{label}, {len(answer)} answer tokens:")
        for name, (compile_s, step_s) in results.items():
            print(
                f"  {name:<11} compile {1000 * compile_s:8.2f} ms   "
                f"mask+consume {1e6 * step_s:8.1f} us/token"
            )


if __name__ == "__main__":
    main()
