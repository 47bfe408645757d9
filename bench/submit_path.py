"""The API's own CPU per submit: `POST /v1/jobs` with a multipart upload, in-process.

vlmq's app (its defaults: rate limit, per-address limit, queue cap; SQLite and an embedded
Redis in a temporary folder) answers Flask's test client, so no HTTP server, worker or
load generator shares the process, and its CPU time is the submit path's alone: the key's
read, the limits, multipart parsing, image checks, the job's insert and its enqueue. The
baseline is the floor of any Flask service taking the same upload: a bare Flask app whose
route only reads the form and the file, on the same bodies in the same run. Jobs are not
waited for (no worker runs); each round submits new questions as a tenant of its own, so
none is a cache hit and no round meets the queue cap or the rate limit.

    .venv/bin/python -m bench.submit_path --jobs 500 --rounds 5
"""

from __future__ import annotations

import argparse
import io
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, request
from flask.testing import FlaskClient

from bench.throughput import Question, easyvqa_questions, free_port
from services.api import create_app
from services.core.config import BUNDLED_MODEL_DIR, Settings
from services.core.migrate import upgrade
from vlmq.cli import create_key
from vlmq.embedded_redis import start_embedded_redis


def bare_app() -> Flask:
    """The baseline: a Flask app that reads the upload and answers 202."""
    app = Flask("baseline")

    @app.post("/v1/jobs")
    def create_job() -> tuple[dict[str, int], int]:
        size = len(request.files["image"].stream.read())
        return {"fields": len(request.form), "bytes": size}, 202

    return app


def submitter(client: FlaskClient, key: str) -> Callable[[Question], None]:
    """Submit one question as `vlmq ask` does: a multipart upload with the question."""

    def submit(q: Question) -> None:
        response = client.post(
            "/v1/jobs",
            headers={"Authorization": f"Bearer {key}"},
            data={"question": q.text, "max_tokens": "4", "image": (io.BytesIO(q.image), "q.png")},
            content_type="multipart/form-data",
        )
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.get_data()!r}")

    return submit


def cpu_ms_per_submit(submit: Callable[[Question], None], questions: list[Question]) -> float:
    """CPU milliseconds of this process per submitted question."""
    started = time.process_time()
    for q in questions:
        submit(q)
    return (time.process_time() - started) * 1000 / len(questions)


def main() -> None:
    parser = argparse.ArgumentParser(description="the API's CPU per submit, in-process")
    parser.add_argument("--jobs", type=int, default=500, help="submits per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    questions = easyvqa_questions(args.jobs * (args.rounds + 1))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port, password = free_port(), secrets.token_urlsafe(16)
        redis_server = start_embedded_redis(tmp / "redis", port, password)
        try:
            database = f"sqlite:///{tmp / 'vlmq.db'}"
            upgrade(database)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                data_dir=tmp / "var",
                database_url=database,
                redis_url=f"redis://:{password}@127.0.0.1:{port}/0",
                model=str(BUNDLED_MODEL_DIR),
                log_level="WARNING",
            )
            client = create_app(settings).test_client()
            baseline = submitter(bare_app().test_client(), "none")
            batches = [
                questions[i * args.jobs : (i + 1) * args.jobs] for i in range(args.rounds + 1)
            ]
            measured = []
            for index, batch in enumerate(batches):
                # A tenant per round: no round meets the queue cap or the rate limit.
                vlmq = submitter(client, create_key(settings, f"bench-{index}", None))
                if index == 0:  # warm-up: connections, compiled statements, imports
                    for q in batch[:50]:
                        vlmq(q)
                        baseline(q)
                    continue
                measured.append(
                    (cpu_ms_per_submit(vlmq, batch), cpu_ms_per_submit(baseline, batch))
                )
        finally:
            redis_server.terminate()
            redis_server.wait(timeout=30)
    print(f"{args.jobs} multipart submits per round, {args.rounds} rounds (CPU ms per submit)")
    print(f"{'round':>5} {'vlmq':>8} {'bare Flask':>11} {'vlmq - bare':>12}")
    for index, (ours, bare) in enumerate(measured, 1):
        print(f"{index:>5} {ours:>8.2f} {bare:>11.2f} {ours - bare:>12.2f}")
    ours = statistics.median(m[0] for m in measured)
    bare = statistics.median(m[1] for m in measured)
    print(f"median {ours:>7.2f} {bare:>11.2f} {ours - bare:>12.2f}")


if __name__ == "__main__":
    main()
