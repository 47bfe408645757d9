"""The bundled easy-VQA model, served by default, answering real easy-VQA test questions.

Through the whole service over HTTP (a real worker loading the committed checkpoint), and
through the backend for the checks that need many questions.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from easy_vqa import get_test_image_paths, get_test_questions
from flask.testing import FlaskClient
from PIL import Image

from services.api import create_app
from services.core.config import BUNDLED_MODEL_DIR, Settings
from services.core.inputs.prompts import GenerationParams
from tests.support import data_url
from workers.backends.base import PredictRequest
from workers.backends.transformers_vlm import TransformersVLM

# What is tested is the model's answers, not the database under them.
pytestmark = pytest.mark.one_database

SAMPLE = 60


def easy_vqa_sample(count: int, offset: int = 0) -> list[tuple[str, str, Path]]:
    """(question, answer, image path) of easy-VQA test questions, spread over the split."""
    questions, answers, image_ids = get_test_questions()
    paths = get_test_image_paths()
    step = len(questions) // count
    return [
        (questions[i], answers[i], Path(paths[image_ids[i]]))
        for i in range(offset, offset + step * count, step)
    ]


@pytest.fixture(scope="module")
def served(bundled: tuple[str, Settings]) -> tuple[Settings, FlaskClient]:
    """The bundled model's stack (default settings, its own worker and queue): its settings
    and a test client of its API."""
    settings = bundled[1]
    return settings, create_app(settings).test_client()


@pytest.fixture(scope="module")
def easyvqa_backend() -> TransformersVLM:
    model = TransformersVLM(str(BUNDLED_MODEL_DIR))
    model.setup("cpu")
    return model


def test_the_bundled_model_is_the_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert Path(settings.model) == BUNDLED_MODEL_DIR
    assert settings.model_id == "easyvqa-glm4v"
    config = (BUNDLED_MODEL_DIR / "config.json").read_text()
    assert '"Glm4vForConditionalGeneration"' in config


def test_http_answers_easy_vqa_questions(
    served: tuple[Settings, FlaskClient], auth: dict[str, str]
) -> None:
    settings, client = served
    models = client.get("/v1/models", headers=auth).get_json()["data"]
    assert models[0]["id"] == "easyvqa-glm4v" and models[0]["root"] == BUNDLED_MODEL_DIR.name
    right = 0
    sample = easy_vqa_sample(SAMPLE)
    for question, answer, path in sample:
        body = {"image": data_url(path.read_bytes()), "question": question}
        job: dict[str, Any] = client.post(
            "/v1/jobs", json=body, headers={**auth, "Prefer": "wait=60"}
        ).get_json()
        assert job["status"] == "succeeded", job
        assert job["output"] == job["output"].strip() and "<" not in job["output"]
        right += job["output"] == answer
    assert right / len(sample) >= 0.95, f"{right}/{len(sample)}"


def test_the_responses_api_answers_easy_vqa_questions_as_jobs_do(
    served: tuple[Settings, FlaskClient], auth: dict[str, str]
) -> None:
    _, client = served
    right = 0
    sample = easy_vqa_sample(16, offset=SAMPLE)
    for question, answer, path in sample:
        content = [
            {"type": "input_image", "image_url": data_url(path.read_bytes())},
            {"type": "input_text", "text": question},
        ]
        response = client.post(
            "/v1/responses",
            json={"input": [{"role": "user", "content": content}]},
            headers=auth,
        ).get_json()
        assert response["status"] == "completed", response
        right += response["output"][0]["content"][0]["text"] == answer
    assert right / len(sample) >= 0.9, f"{right}/{len(sample)}"


def test_ignore_eos_and_min_tokens_set_the_answer_length(
    served: tuple[Settings, FlaskClient], auth: dict[str, str]
) -> None:
    """vLLM's extensions, through a real worker: the bundled model ends its answer after
    one word, unless told to ignore its end token or to write at least `min_tokens`."""
    _, client = served
    _, _, path = easy_vqa_sample(1)[0]
    image = data_url(path.read_bytes())
    wait = {**auth, "Prefer": "wait=60"}
    body = {"image": image, "question": "what color is the shape?", "max_tokens": 6}
    usual = client.post("/v1/jobs", json=body, headers=wait).get_json()["result"]
    assert usual["usage"]["completion_tokens"] < 3 and usual["finish_reason"] == "stop"
    full = client.post("/v1/jobs", json={**body, "ignore_eos": True}, headers=wait).get_json()
    assert full["result"]["usage"]["completion_tokens"] == 6
    assert full["result"]["finish_reason"] == "length"
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "text", "text": "what color is the shape?"},
            ],
        }
    ]
    chat = {"model": "easyvqa-glm4v", "messages": messages, "max_tokens": 8, "min_tokens": 4}
    completion = client.post("/v1/chat/completions", json=chat, headers=auth).get_json()
    assert completion["usage"]["completion_tokens"] >= 4, completion
    refused = client.post("/v1/chat/completions", json={**chat, "min_tokens": 9}, headers=auth)
    assert refused.status_code == 400 and refused.get_json()["error"]["param"] == "min_tokens"


def ask(backend: TransformersVLM, image: Image.Image, question: str) -> PredictRequest:
    content = [{"type": "image", "image": image}, {"type": "text", "text": question}]
    return PredictRequest([{"role": "user", "content": content}], GenerationParams(max_tokens=8))


def reencoded(path: Path, size: tuple[int, int], fmt: str) -> Image.Image:
    """The image resized and saved in another format, then decoded as the service would."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").resize(size).save(buffer, format=fmt)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.mark.parametrize(("size", "fmt"), [((128, 128), "JPEG"), ((300, 200), "WEBP")])
def test_other_sizes_and_formats_are_answered(
    easyvqa_backend: TransformersVLM, size: tuple[int, int], fmt: str
) -> None:
    backend = easyvqa_backend
    sample = [q for q in easy_vqa_sample(120, offset=3) if q[1] not in ("yes", "no")][:40]
    requests = [ask(backend, reencoded(path, size, fmt), question) for question, _, path in sample]
    answers = [p.answer for p in backend.predict(requests)]
    right = sum(a == expected for a, (_, expected, _) in zip(answers, sample, strict=True))
    assert right / len(sample) >= 0.95, (right, len(sample), answers)


def test_yes_probability_matches_yes_no_answers(easyvqa_backend: TransformersVLM) -> None:
    backend = easyvqa_backend
    sample = [q for q in easy_vqa_sample(600, offset=1) if q[1] in ("yes", "no")][:200]
    requests = [
        ask(backend, Image.open(path).convert("RGB"), question) for question, _, path in sample
    ]
    probabilities: list[float] = []
    for start in range(0, len(requests), 50):
        probabilities += backend.yes_probability(requests[start : start + 50])
    right = sum(
        (p > 0.5) == (answer == "yes")
        for p, (_, answer, _) in zip(probabilities, sample, strict=True)
    )
    assert right / len(sample) >= 0.95, f"{right}/{len(sample)}"


def test_triangle_policy_flags_easy_vqa_test_images(easyvqa_backend: TransformersVLM) -> None:
    questions, answers, image_ids = get_test_questions()
    paths = get_test_image_paths()
    shapes = {
        image_id: answer
        for answer, image_id in zip(answers, image_ids, strict=True)
        if answer in ("circle", "rectangle", "triangle")
    }
    sample = sorted(shapes.items())[:200]
    params = GenerationParams(max_tokens=1, score_questions={"triangle": "is there a triangle?"})
    requests = [
        PredictRequest(
            [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": Image.open(paths[i]).convert("RGB")}],
                }
            ],
            params,
        )
        for i, _ in sample
    ]
    scores = [p.scores["triangle"] for p in easyvqa_backend.predict(requests) if p.scores]
    right = sum(
        (s >= 0.5) == (shape == "triangle") for s, (_, shape) in zip(scores, sample, strict=True)
    )
    assert right / len(sample) >= 0.95, f"{right}/{len(sample)}"
