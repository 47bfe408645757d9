"""LoRA adapters beside the base model, and token log-probabilities, in the backend.

On the bundled model and its shipped adapter `easyvqa-glm4v-fr` (real weights, real
easy-VQA test images): one model call carries base and adapter requests together (PEFT's
mixed-adapter batches) and each answer equals that request run alone; logprobs do not
depend on the company a request keeps, nor on the batching path.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from easy_vqa import get_test_image_paths, get_test_questions

from services.core.config import BUNDLED_ADAPTER_DIR, BUNDLED_ADAPTER_NAME, BUNDLED_MODEL_DIR
from services.core.inputs.images import to_rgb
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import Generation, PredictRequest, TokenLogprob
from workers.backends.transformers_vlm import TransformersVLM
from workers.models.evaluate_easyvqa import FRENCH_ANSWERS

FR = BUNDLED_ADAPTER_NAME
TOLERANCE = 1e-4


def sample(count: int) -> list[tuple[str, str, Path]]:
    """(question, English answer, image) of easy-VQA test questions spread over the split."""
    questions, answers, image_ids = get_test_questions()
    paths = get_test_image_paths()
    step = len(questions) // count
    return [
        (questions[i], answers[i], Path(paths[image_ids[i]])) for i in range(0, step * count, step)
    ]


def ask(question: str, image: Path, adapter: str | None = None, **params: object) -> PredictRequest:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": to_rgb(image.read_bytes())},
                {"type": "text", "text": question},
            ],
        }
    ]
    return PredictRequest(
        messages,
        GenerationParams(**{"max_tokens": 4, **params}),  # type: ignore[arg-type]
        adapter=adapter,
    )


def loaded(batching: str) -> TransformersVLM:
    backend = TransformersVLM(
        str(BUNDLED_MODEL_DIR), batching=batching, adapters={FR: str(BUNDLED_ADAPTER_DIR)}
    )
    backend.setup("cpu")
    return backend


@pytest.fixture(scope="module")
def continuous() -> TransformersVLM:
    return loaded("continuous")


@pytest.fixture(scope="module")
def static() -> TransformersVLM:
    return loaded("static")


def run_engine(backend: TransformersVLM, requests: list[PredictRequest]) -> list[Generation]:
    """All requests prefilled together, then decoded in one batch; results in order."""
    engine = backend.continuous_engine()
    assert engine is not None
    done = {finished.key: finished for finished in engine.admit(list(enumerate(requests)))}
    while len(engine):
        done.update((finished.key, finished) for finished in engine.step())
    return [done[index] for index in range(len(requests))]


def test_the_adapter_answers_in_french_and_the_base_in_english(
    continuous: TransformersVLM,
) -> None:
    questions = sample(24)
    requests = [
        ask(question, image, adapter=FR if index % 2 else None)
        for index, (question, _, image) in enumerate(questions)
    ]
    finished = run_engine(continuous, requests)
    assert max(result.batch_size for result in finished) == len(requests)  # one batch
    right = 0
    for index, ((_, answer, _), result) in enumerate(zip(questions, finished, strict=True)):
        expected = FRENCH_ANSWERS[answer] if index % 2 else answer
        right += result.prediction.answer == expected
    assert right >= len(requests) - 1


@pytest.mark.parametrize("batching", ["continuous", "static"])
def test_a_mixed_adapter_batch_answers_as_each_request_alone(
    batching: str, continuous: TransformersVLM, static: TransformersVLM
) -> None:
    backend = continuous if batching == "continuous" else static
    requests = [
        ask(question, image, adapter=FR if index % 3 else None, logprobs=True, top_logprobs=2)
        for index, (question, _, image) in enumerate(sample(9))
    ]
    if batching == "continuous":
        together = [result.prediction for result in run_engine(backend, requests)]
    else:
        together = backend.predict(requests)  # one `generate` for the whole mixed batch
    for request, mixed in zip(requests, together, strict=True):
        [alone] = backend.predict([request])
        assert mixed.answer == alone.answer
        assert mixed.logprobs is not None and alone.logprobs is not None
        assert_same_logprobs(mixed.logprobs, alone.logprobs)


def assert_same_logprobs(first: list[TokenLogprob], second: list[TokenLogprob]) -> None:
    assert [entry["token"] for entry in first] == [entry["token"] for entry in second]
    for one, other in zip(first, second, strict=True):
        assert math.isclose(one["logprob"], other["logprob"], abs_tol=TOLERANCE)
        assert [top["token"] for top in one["top_logprobs"]] == [
            top["token"] for top in other["top_logprobs"]
        ]


def test_logprobs_are_the_same_batched_alone_and_on_either_path(
    continuous: TransformersVLM, static: TransformersVLM
) -> None:
    requests = [
        ask(question, image, logprobs=True, top_logprobs=3, ignore_eos=True)
        for question, _, image in sample(6)
    ]
    engine = [result.prediction for result in run_engine(continuous, requests)]
    batched = static.predict(requests)
    for request, from_engine, from_generate in zip(requests, engine, batched, strict=True):
        [alone] = continuous.predict([request])
        for prediction in (from_engine, from_generate):
            assert prediction.logprobs is not None and alone.logprobs is not None
            assert_same_logprobs(prediction.logprobs, alone.logprobs)


def test_logprob_entries_describe_the_answer(continuous: TransformersVLM) -> None:
    [(question, answer, image)] = sample(1)
    [result] = run_engine(continuous, [ask(question, image, logprobs=True, top_logprobs=5)])
    prediction = result.prediction
    assert prediction.answer == answer
    entries = prediction.logprobs
    assert entries is not None and [entry["token"] for entry in entries] == [answer]
    [entry] = entries
    assert entry["bytes"] == list(answer.encode())
    assert entry["logprob"] <= 0
    tops = entry["top_logprobs"]
    assert len(tops) == 5
    ordered = sorted((top["logprob"] for top in tops), reverse=True)
    assert [top["logprob"] for top in tops] == ordered
    # Greedy: the chosen token is the most likely one.
    assert tops[0]["token"] == answer and math.isclose(tops[0]["logprob"], entry["logprob"])
    result_fields = prediction.result()
    assert result_fields["logprobs"] == {"content": entries}
    assert math.isclose(result_fields["confidence"], math.exp(entry["logprob"]))


def test_no_logprobs_unless_asked(continuous: TransformersVLM) -> None:
    [(question, _, image)] = sample(1)
    [result] = run_engine(continuous, [ask(question, image)])
    assert result.prediction.logprobs is None
    assert "logprobs" not in result.prediction.result()


def test_streamed_logprobs_are_the_answers(continuous: TransformersVLM) -> None:
    [(question, _, image)] = sample(1)
    request = ask(question, image, logprobs=True, max_tokens=6, ignore_eos=True)
    streamed: list[tuple[str, list[TokenLogprob]]] = []
    streaming = PredictRequest(
        request.messages,
        request.params,
        on_text=lambda text, logprobs: streamed.append((text, logprobs)),
    )
    [result] = run_engine(continuous, [streaming])
    assert result.prediction.logprobs == [entry for _, pieces in streamed for entry in pieces]
    # Each piece of text came with its tokens (markup and end tokens have none).
    assert all(pieces for text, pieces in streamed if text.strip())
