"""The continuous-batching engine on real (tiny, random-weight) checkpoints of four models.

Greedy answers must be the very tokens of one-request-at-a-time `generate`, whatever
joins or leaves the batch around them: requests arrive at different steps, ask for
different lengths, and carry images of different sizes (so each M-RoPE row has its own
rope delta).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from services.core.config import BUNDLED_MODEL_DIR
from services.core.inputs.prompts import GenerationParams
from tests.conftest import TINY_WORDS
from tests.tiny_llava import build_tiny_llava
from tests.tiny_qwen2vl import build_tiny_qwen2vl
from workers.backends.base import Generation, PredictRequest
from workers.backends.continuous import ContinuousEngine, position_scheme
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.glm4v_builder import Glm4vRecipe, build_glm4v
from workers.schedulers import RequestCanceled, create_scheduler

MODELS = ["bundled", "glm", "qwen2vl", "llava"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # The tiny GLM-4V puts spaces between its words: a stop test reads its answer by word.
    glm = build_glm4v(Glm4vRecipe(words=TINY_WORDS, seed=0), tmp_path_factory.mktemp("glm"))
    return {
        "bundled": BUNDLED_MODEL_DIR,
        "glm": glm,
        "qwen2vl": build_tiny_qwen2vl(TINY_WORDS, tmp_path_factory.mktemp("qwen2vl")),
        "llava": build_tiny_llava(TINY_WORDS, tmp_path_factory.mktemp("llava")),
    }


@pytest.fixture(scope="module")
def backends(model_dirs: dict[str, Path]) -> dict[str, TransformersVLM]:
    loaded = {}
    for name, path in model_dirs.items():
        backend = TransformersVLM(str(path))
        backend.setup("cpu")
        loaded[name] = backend
    return loaded


def ask(color: str, size: tuple[int, int], question: str, **params: object) -> PredictRequest:
    image = Image.new("RGB", size, color)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
        }
    ]
    return PredictRequest(messages, GenerationParams(**params))  # type: ignore[arg-type]


MIXED = [
    ("red", (64, 64), "what color is the shape?", 7),
    ("blue", (96, 48), "is there a circle?", 2),
    ("green", (48, 80), "what shape is in the image?", 9),
    ("red", (80, 80), "does the image contain a triangle?", 4),
    ("blue", (64, 96), "what color?", 6),
]


def run_staggered(
    engine: ContinuousEngine, requests: list[PredictRequest], together: int = 1
) -> tuple[dict[object, Generation], list[int]]:
    """Admit `together` requests (prefilled in one pass) before each step; the finished
    requests and the batch size at each step."""
    finished: dict[object, Generation] = {}
    sizes: list[int] = []
    waiting: list[tuple[object, PredictRequest]] = list(enumerate(requests))
    while waiting or len(engine):
        arriving, waiting = waiting[:together], waiting[together:]
        if arriving:
            for done in engine.admit(arriving):
                finished[done.key] = done
        sizes.append(len(engine))
        for done in engine.step():
            finished[done.key] = done
    return finished, sizes


@pytest.mark.parametrize("together", [1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_greedy_answers_equal_one_at_a_time_generate(
    name: str, together: int, backends: dict[str, TransformersVLM]
) -> None:
    """Requests arrive one per step, or two at a time (prefilled together, left-padded)."""
    backend = backends[name]
    engine = backend.continuous_engine()
    assert isinstance(engine, ContinuousEngine)
    requests = [
        ask(color, size, question, max_tokens=max_tokens, ignore_eos=(name != "bundled"))
        for color, size, question, max_tokens in MIXED
    ]
    # The bundled model ends its answers itself; the random ones run to their lengths.
    alone = [backend.predict([request])[0] for request in requests]
    finished, sizes = run_staggered(engine, requests, together)
    assert len(engine) == 0
    for index, expected in enumerate(alone):
        got = finished[index].prediction
        assert (got.raw, got.completion_tokens, got.finish_reason) == (
            expected.raw,
            expected.completion_tokens,
            expected.finish_reason,
        ), f"request {index}"
        assert got.prompt_tokens == expected.prompt_tokens
    if name != "bundled":  # rows really shared steps, joined late and left early
        assert max(sizes) >= 3
        assert [finished[i].prediction.completion_tokens for i in range(5)] == [7, 2, 9, 4, 6]


def test_text_only_and_image_rows_share_a_batch(backends: dict[str, TransformersVLM]) -> None:
    backend = backends["glm"]
    engine = backend.continuous_engine()
    assert engine is not None
    text_only = PredictRequest(
        [{"role": "user", "content": [{"type": "text", "text": "is there a circle?"}]}],
        GenerationParams(max_tokens=5, ignore_eos=True),
    )
    requests = [ask("red", (64, 64), "what color?", max_tokens=6, ignore_eos=True), text_only]
    alone = [backend.predict([request])[0].raw for request in requests]
    finished, _ = run_staggered(engine, requests)  # type: ignore[arg-type]
    assert [finished[i].prediction.raw for i in range(2)] == alone


def test_min_tokens_and_ignore_eos_set_the_length(backends: dict[str, TransformersVLM]) -> None:
    backend = backends["bundled"]
    engine = backend.continuous_engine()
    assert engine is not None
    requests = [
        ask("red", (64, 64), "what color is the shape?", max_tokens=5, min_tokens=3),
        ask("red", (64, 64), "what color is the shape?", max_tokens=6, ignore_eos=True),
        ask("red", (64, 64), "what color is the shape?", max_tokens=6),
    ]
    finished, _ = run_staggered(engine, requests)
    static = [backend.predict([request])[0] for request in requests]
    lengths = [finished[i].prediction.completion_tokens for i in range(3)]
    assert lengths[0] >= 3 and lengths[1] == 6 and lengths[2] < 3
    assert lengths == [p.completion_tokens for p in static]
    assert finished[1].prediction.finish_reason == "length"


def test_streamed_text_comes_step_by_step(backends: dict[str, TransformersVLM]) -> None:
    backend = backends["glm"]
    engine = backend.continuous_engine()
    assert engine is not None
    pieces: list[tuple[int, str]] = []
    step = 0

    def on_text(delta: str, _logprobs: list[dict[str, object]]) -> None:
        pieces.append((step, delta))

    streaming = ask("red", (64, 64), "what color?", max_tokens=6, ignore_eos=True)
    streaming = PredictRequest(streaming.messages, streaming.params, on_text=on_text)
    assert engine.admit([("streaming", streaming)]) == []
    done: list[Generation] = []
    while len(engine):
        step += 1
        done += engine.step()
    [finished] = done
    assert "".join(delta for _, delta in pieces).strip() == finished.prediction.answer
    assert len({at for at, _ in pieces}) >= 3  # pieces came at different steps


def test_sampling_with_a_seed_repeats_whatever_the_company(
    backends: dict[str, TransformersVLM],
) -> None:
    backend = backends["glm"]
    engine = backend.continuous_engine()
    assert engine is not None
    sampled = ask("red", (64, 64), "what color?", max_tokens=8, temperature=1.0, seed=7)
    alone, _ = run_staggered(engine, [sampled])
    crowd = [ask("blue", (48, 48), "is there a circle?", max_tokens=8), sampled]
    together, _ = run_staggered(engine, crowd)
    assert together[1].prediction.raw == alone[0].prediction.raw


def test_unknown_architectures_and_the_static_setting_run_static(
    model_dirs: dict[str, Path],
) -> None:
    static = TransformersVLM(str(model_dirs["glm"]), batching="static")
    static.setup("cpu")
    assert static.continuous_engine() is None
    unknown = SimpleNamespace(config=SimpleNamespace(model_type="idefics3"))
    assert position_scheme(unknown) is None


def wait_for_steps(steps: list[int], count: int) -> None:
    """Wait (at most 30 s) until the scheduler has made `count` model calls."""
    deadline = time.monotonic() + 30
    while len(steps) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_canceled_row_leaves_at_the_next_step(backends: dict[str, TransformersVLM]) -> None:
    backend = backends["glm"]
    steps: list[int] = []
    scheduler = create_scheduler(backend, max_batch=8, wait_ms=0, on_call=steps.append)
    canceled = threading.Event()
    long = ask("red", (64, 64), "what color?", max_tokens=400, ignore_eos=True)
    short = ask("blue", (64, 64), "is there a circle?", max_tokens=3, ignore_eos=True)
    outcome: dict[str, object] = {}

    def run_long() -> None:
        try:
            scheduler.run(long, company=8, time_limit_s=60, canceled=canceled.is_set)
        except RequestCanceled as exc:
            outcome["long"] = exc
            outcome["steps"] = len(steps)

    thread = threading.Thread(target=run_long)
    thread.start()
    wait_for_steps(steps, 5)
    result = scheduler.run(short, company=8, time_limit_s=60)
    assert result.prediction.completion_tokens == 3 and result.batch_size == 2
    canceled.set()
    at_cancel = len(steps)
    thread.join(timeout=30)
    assert isinstance(outcome.get("long"), RequestCanceled)
    assert int(outcome["steps"]) - at_cancel <= 2  # type: ignore[call-overload]
    assert len(steps) < 400


def test_a_canceled_batchs_lines_leave_at_the_next_step(
    backends: dict[str, TransformersVLM],
) -> None:
    """The lines of a chunk share one cancel check (their batch's): all leave together."""
    backend = backends["glm"]
    steps: list[int] = []
    scheduler = create_scheduler(backend, max_batch=8, wait_ms=0, on_call=steps.append)
    canceled = threading.Event()
    lines = [ask("red", (64, 64), "what color?", max_tokens=400, ignore_eos=True)] * 3
    outcome: dict[str, object] = {}

    def run_lines() -> None:
        outcome["lines"] = scheduler.run_many(
            lines, company=8, time_limit_s=60, canceled=canceled.is_set
        )
        outcome["steps"] = len(steps)

    thread = threading.Thread(target=run_lines)
    thread.start()
    wait_for_steps(steps, 5)
    canceled.set()
    at_cancel = len(steps)
    thread.join(timeout=30)
    results = outcome["lines"]
    assert isinstance(results, list) and len(results) == 3
    assert all(isinstance(result, RequestCanceled) for result in results)
    assert int(outcome["steps"]) - at_cancel <= 2  # type: ignore[call-overload]


def language_model_positions(backend: TransformersVLM) -> tuple[list[object], object]:
    """Record the position ids of every language-model call (prefill, then each step)."""
    seen: list[object] = []

    def record(_module: object, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        seen.append(kwargs["position_ids"].clone())  # type: ignore[attr-defined]

    language_model = backend.model.model.language_model
    return seen, language_model.register_forward_pre_hook(record, with_kwargs=True)


@pytest.mark.parametrize("name", MODELS)
def test_positions_equal_those_generate_computes(
    name: str, backends: dict[str, TransformersVLM]
) -> None:
    """Token equality alone could hide a wrong M-RoPE offset (a tiny random model's answer
    barely depends on it): each row's positions, prompt and decode steps, are those that
    `generate` computes for the request alone."""
    backend = backends[name]
    engine = backend.continuous_engine()
    assert engine is not None
    for color, size, question, _ in MIXED[:3]:
        request = ask(color, size, question, max_tokens=4, ignore_eos=True)
        seen, hook = language_model_positions(backend)
        try:
            backend.predict([request])
            expected = list(seen)
            seen.clear()
            run_staggered(engine, [request])
        finally:
            hook.remove()
        # The engine's last step decodes a token nobody reads: the answer ended before it.
        assert len(seen) >= len(expected)
        for want, got in zip(expected, seen, strict=False):
            if want.ndim == 3 and want.shape[0] == 4:  # type: ignore[attr-defined]
                want = want[1:]  # type: ignore[index]  # text positions first, for packing
            assert want.shape[-1] == got.shape[-1]  # type: ignore[attr-defined]
            assert (want.expand_as(got) == got).all(), (name, size)  # type: ignore[attr-defined]


def test_stop_strings_cut_the_answer_where_generate_does(
    backends: dict[str, TransformersVLM],
) -> None:
    # A stop word deep into the answer: only the tail of the answer is searched each step.
    backend = backends["glm"]
    full = backend.predict([ask("blue", (64, 64), "what color?", max_tokens=12)])[0]
    words = full.raw.split()
    # The last word (but the answer's last) that appears nowhere in the answer before.
    late = [i for i, word in enumerate(words[:-1]) if i >= 3 and word not in " ".join(words[:i])]
    assert late, f"the random model should say more: {full.raw!r}"
    stop = [words[late[-1]]]
    expected = backend.predict([ask("blue", (64, 64), "what color?", max_tokens=12, stop=stop)])[0]
    engine = backend.continuous_engine()
    assert isinstance(engine, ContinuousEngine)
    request = ask("blue", (64, 64), "what color?", max_tokens=12, stop=stop)
    finished, _ = run_staggered(
        engine, [request, ask("red", (64, 64), "what color?", max_tokens=9)]
    )
    got = finished[0].prediction
    assert got.finish_reason == "stop" == expected.finish_reason
    assert got.raw == expected.raw and got.raw.split() == words[: late[-1]]
    assert got.completion_tokens < full.completion_tokens  # it stopped there
