"""Fake model backends, one per failure mode, for tests that are not about the model.

Each writes one line per call to the file named by `VLMQ_FAKE_CALL_LOG`, so a test can
count model calls across worker processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from workers.backends.base import Prediction, PredictRequest


def record_call(event: str) -> None:
    """Append `event pid` to the call log, if the test asked for one."""
    log = os.environ.get("VLMQ_FAKE_CALL_LOG")
    if log:
        with Path(log).open("a") as handle:
            handle.write(f"{event} {os.getpid()}\n")


def question_of(request: PredictRequest) -> str:
    """The text of the request's last message."""
    parts = request.messages[-1]["content"]
    return " ".join(part["text"] for part in parts if part.get("type") == "text")


class SlowFakeBackend:
    """Answers `echo: <question>` after sleeping `VLMQ_FAKE_SLEEP_S` seconds (default 2)."""

    def __init__(self, model_path: str) -> None:
        self.model_path = model_path

    def setup(self, device: str) -> None:
        """Nothing to load."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Sleep, then echo each question."""
        record_call("start")
        time.sleep(float(os.environ.get("VLMQ_FAKE_SLEEP_S", "2")))
        record_call("done")
        return [Prediction(answer=f"echo: {question_of(r)}", raw=question_of(r)) for r in batch]


class CrashingFakeBackend(SlowFakeBackend):
    """Kills its own process on every call: a poison input."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Die the way an out-of-memory kill does."""
        record_call("crash")
        os.kill(os.getpid(), signal.SIGKILL)
        return []


class StreamingFakeBackend(SlowFakeBackend):
    """Says `one two three four`, a word every `VLMQ_FAKE_SLEEP_S` seconds, streaming each."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Stream four words slowly."""
        record_call("start")
        delay = float(os.environ.get("VLMQ_FAKE_SLEEP_S", "0.5"))
        words = ["one", " two", " three", " four"]
        for word in words:
            time.sleep(delay)
            for request in batch:
                if request.on_text is not None:
                    request.on_text(word, [])
        record_call("done")
        text = "".join(words)
        return [Prediction(answer=text, raw=text, completion_tokens=4) for _ in batch]


class CountingFakeBackend(SlowFakeBackend):
    """Echoes like SlowFakeBackend (sleeping `VLMQ_FAKE_SLEEP_S` per call, default 0.2) and
    writes `end <question>` for each request it answered, so a test can count, per job,
    how often the model ran it to the end."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Sleep, then echo each question and record it."""
        time.sleep(float(os.environ.get("VLMQ_FAKE_SLEEP_S", "0.2")))
        for request in batch:
            record_call(f"end {question_of(request)}")
        return [Prediction(answer=f"echo: {question_of(r)}", raw=question_of(r)) for r in batch]


class BrokenModelFakeBackend(SlowFakeBackend):
    """A model that cannot load: its weights are missing."""

    def setup(self, device: str) -> None:
        """Fail the way a missing checkpoint does."""
        raise FileNotFoundError("model.safetensors not found (fake)")


class PoisonFakeBackend(SlowFakeBackend):
    """Fails any call that holds a request asking "poison", as a processor does on an input
    it cannot take: the whole batched call fails."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """Sleep, then fail the call if any request is poison, else echo each question."""
        record_call(f"call size={len(batch)}")
        time.sleep(float(os.environ.get("VLMQ_FAKE_SLEEP_S", "0.3")))
        if any(question_of(r) == "poison" for r in batch):
            raise ValueError("absolute aspect ratio must be smaller than 200, got 300.0")
        return [Prediction(answer=f"echo: {question_of(r)}", raw=question_of(r)) for r in batch]


class EchoFakeBackend:
    """Answers "yes" to everything at once, and logs nothing: for counting what the service
    itself does around a model call."""

    def __init__(self, model_path: str = "") -> None:
        self.model_path = model_path

    def setup(self, device: str) -> None:
        """Nothing to load."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        """One "yes" per request."""
        return [Prediction(answer="yes", raw="yes") for _ in batch]
