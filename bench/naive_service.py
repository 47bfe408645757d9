"""The naive baseline: the Flask + Celery model service most teams write first.

One Celery task per request, one request per model call, no batching, no cache, no
single-flight; the web process waits on Celery's result backend. It uses the same
backend class and the same model as vlmq, so only the serving design differs.

    python -m bench.naive_service api|worker   (configured by NAIVE_* environment variables)
"""

from __future__ import annotations

import base64
import io
import os
import sys
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from flask import Flask, jsonify, request
from PIL import Image

from services.core.inputs.prompts import GenerationParams

REDIS_URL = os.environ.get("NAIVE_REDIS_URL", "redis://127.0.0.1:6379/14")
celery = Celery("naive", broker=REDIS_URL, backend=REDIS_URL)
celery.conf.update(worker_prefetch_multiplier=1, task_acks_late=True, result_expires=600)
_backend: Any = None


@worker_process_init.connect
def load_model(**_: Any) -> None:
    """Each worker process loads the model once."""
    global _backend
    from workers.backends.transformers_vlm import TransformersVLM

    _backend = TransformersVLM(os.environ["NAIVE_MODEL"])
    _backend.setup("auto")


@celery.task(name="naive.predict")
def predict(image_b64: str, question: str, max_tokens: int) -> str:
    """Answer one question about one image."""
    from workers.backends.base import PredictRequest

    image = Image.open(io.BytesIO(base64.b64decode(image_b64))).convert("RGB")
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": question}],
        }
    ]
    prediction = _backend.predict(
        [PredictRequest(messages, GenerationParams(max_tokens=max_tokens))]
    )[0]
    return str(prediction.answer)


app = Flask(__name__)


@app.post("/predict")
def predict_route() -> Any:
    """Enqueue the request and block on the result backend."""
    body = request.get_json()
    result = predict.delay(body["image"], body["question"], body.get("max_tokens", 8))
    return jsonify({"output": result.get(timeout=600)})


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        celery.worker_main(["worker", "--pool=prefork", "--concurrency=1", "--loglevel=WARNING"])
    else:
        from werkzeug.serving import make_server

        make_server("127.0.0.1", int(os.environ["NAIVE_PORT"]), app, threaded=True).serve_forever()
