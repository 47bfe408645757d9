"""The continuous scheduler's decode loop over an engine: who joins the batch when, who
leaves it, and what one failure costs the others; and which scheduler a backend gets."""

from __future__ import annotations

import threading
import time

import pytest

from services.core.inputs.prompts import GenerationParams
from tests.support import wait_until
from workers.backends.base import Generation, Prediction, PredictRequest
from workers.schedulers import (
    ContinuousScheduler,
    RequestCanceled,
    StaticScheduler,
    create_scheduler,
)


class CountingFakeEngine:
    """Each request takes `max_tokens` steps; the answer says how many shared its steps.

    `poison` in a request's text fails its prefill (when `at` is "prefill") or every step
    it is in (when `at` is "step").
    """

    def __init__(self, at: str = "step", step_s: float = 0.0) -> None:
        self.step_s = step_s
        self.rows: dict[object, tuple[PredictRequest, int, int]] = {}
        self.steps: list[int] = []
        self.admitted: list[int] = []
        self.at = at
        self.gate = threading.Event()
        self.gate.set()

    def accepts(self, request: PredictRequest) -> bool:
        return request.params.score_questions is None

    def admit(self, requests: list[tuple[object, PredictRequest]]) -> list[Generation]:
        self.admitted.append(len(requests))
        if self.at == "prefill" and any(poisoned(request) for _, request in requests):
            raise ValueError("the image cannot be read")
        for key, request in requests:
            self.rows[key] = (request, 0, 1)
        return []

    def step(self) -> list[Generation]:
        self.gate.wait()
        time.sleep(self.step_s)
        self.steps.append(len(self.rows))
        if self.at == "step" and any(poisoned(r) for r, _, _ in self.rows.values()):
            raise RuntimeError("device-side assert")
        finished = []
        for key, (request, done, peak) in list(self.rows.items()):
            done, peak = done + 1, max(peak, len(self.rows))
            self.rows[key] = (request, done, peak)
            if done >= request.params.max_tokens:
                del self.rows[key]
                finished.append(Generation(key, Prediction(answer=f"{done}", raw=""), peak))
        return finished

    def drop(self, key: object) -> None:
        self.rows.pop(key, None)

    def clear(self) -> None:
        self.rows.clear()

    def __len__(self) -> int:
        return len(self.rows)


class StaticFakeBackend:
    """A backend whose static path answers `alone` (the scheduler's retries use it)."""

    def __init__(self, engine: CountingFakeEngine) -> None:
        self.engine = engine
        self.predicted: list[int] = []

    def setup(self, device: str) -> None:
        """Nothing to load."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        self.predicted.append(len(batch))
        if any(poisoned(request) for request in batch):
            raise RuntimeError("device-side assert")
        return [Prediction(answer="alone", raw="") for _ in batch]

    def continuous_engine(self) -> CountingFakeEngine:
        return self.engine


def poisoned(request: PredictRequest) -> bool:
    return "poison" in str(request.messages)


def ask(tokens: int, text: str = "hi") -> PredictRequest:
    return PredictRequest([{"role": "user", "content": text}], GenerationParams(max_tokens=tokens))


def test_a_short_request_joins_a_running_one_and_leaves_first() -> None:
    engine = CountingFakeEngine()
    engine.gate.clear()
    scheduler = create_scheduler(StaticFakeBackend(engine), max_batch=8, wait_ms=1000)
    long = scheduler.submit(ask(50))
    short = scheduler.submit(ask(3))
    engine.gate.set()
    assert short.result(timeout=5).prediction.answer == "3"
    assert long.result(timeout=5).prediction.answer == "50"
    assert short.result().batch_size == 2
    # Two rows while the short one ran, then the long one alone: no step waited for it.
    assert engine.steps.count(2) == 3 and engine.steps.count(1) == 47


def test_a_failed_prefill_fails_only_its_own_request() -> None:
    engine = CountingFakeEngine(at="prefill")
    engine.gate.clear()
    scheduler = create_scheduler(StaticFakeBackend(engine), max_batch=8, wait_ms=0)
    scheduler.submit(ask(1))  # holds the loop in a step while the next two queue up
    good = scheduler.submit(ask(4))
    bad = scheduler.submit(ask(4, "poison"))
    engine.gate.set()
    with pytest.raises(ValueError, match="cannot be read"):
        bad.result(timeout=5)
    assert good.result(timeout=5).prediction.answer == "4"
    assert engine.admitted[-2:] == [1, 1]  # each alone after a shared prefill failed


def test_a_failed_step_retries_each_request_alone() -> None:
    engine = CountingFakeEngine(at="step")
    engine.gate.clear()
    backend = StaticFakeBackend(engine)
    scheduler = create_scheduler(backend, max_batch=8, wait_ms=0)
    good = [scheduler.submit(ask(4)) for _ in range(2)]
    bad = scheduler.submit(ask(4, "poison"))
    engine.gate.set()
    with pytest.raises(RuntimeError, match="device-side assert"):
        bad.result(timeout=5)
    assert [f.result(timeout=5).prediction.answer for f in good] == ["alone", "alone"]
    assert backend.predicted.count(1) == 3 and len(engine) == 0


def test_canceled_and_timed_out_rows_leave_the_batch() -> None:
    engine = CountingFakeEngine(step_s=0.002)
    engine.gate.clear()
    scheduler = create_scheduler(StaticFakeBackend(engine), max_batch=8, wait_ms=0)
    canceled = threading.Event()
    outcome: dict[str, BaseException] = {}

    def run(name: str, **options: object) -> None:
        try:
            scheduler.run(ask(10_000), company=8, **options)  # type: ignore[arg-type]
        except (RequestCanceled, TimeoutError) as exc:
            outcome[name] = exc

    threads = [
        threading.Thread(
            target=run, args=("canceled",), kwargs={"time_limit_s": 60, "canceled": canceled.is_set}
        ),
        threading.Thread(target=run, args=("late",), kwargs={"time_limit_s": 0.3}),
    ]
    for thread in threads:
        thread.start()
    engine.gate.set()
    canceled.set()
    for thread in threads:
        thread.join(timeout=10)
    assert isinstance(outcome["canceled"], RequestCanceled)
    assert isinstance(outcome["late"], TimeoutError)
    # They leave the batch at its next step.
    wait_until(lambda: len(engine) == 0, 5, "the batch to empty", interval_s=0.01)
    assert len(engine.steps) < 1_000


def test_requests_of_another_company_wait_for_the_batch_to_empty() -> None:
    engine = CountingFakeEngine()
    engine.gate.clear()
    scheduler = create_scheduler(StaticFakeBackend(engine), max_batch=8, wait_ms=0)
    first = scheduler.submit(ask(5))
    retried = scheduler.submit(ask(2), company=1)  # a last attempt runs alone
    later = scheduler.submit(ask(5))
    engine.gate.set()
    assert retried.result(timeout=5).batch_size == 1
    assert first.result(timeout=5).batch_size == 1
    assert later.result(timeout=5).batch_size == 1


def test_a_newcomer_tenant_is_prefilled_without_the_others_waiting() -> None:
    engine = CountingFakeEngine()
    engine.gate.clear()
    scheduler = create_scheduler(StaticFakeBackend(engine), max_batch=8, wait_ms=0)
    answers: dict[str, str] = {}

    def run(name: str, tenant: str, tokens: int) -> None:
        result = scheduler.run(ask(tokens), company=8, time_limit_s=30, tenant=tenant)
        answers[name] = result.prediction.answer

    def start(name: str, tenant: str, tokens: int) -> threading.Thread:
        thread = threading.Thread(target=run, args=(name, tenant, tokens))
        thread.start()
        return thread

    threads = [start("busy-0", "busy", 20)]
    wait_until(lambda: len(engine) == 1, 5, "the first row", interval_s=0.01)
    threads += [start(f"busy-{n}", "busy", 20) for n in range(1, 4)]
    wait_until(lambda: scheduler.pending.qsize() == 3, 5, "the busy tenant's rows to queue")
    threads.append(start("quiet", "quiet", 2))
    wait_until(lambda: scheduler.pending.qsize() == 4, 5, "the newcomer to queue")
    engine.gate.set()
    for thread in threads:
        thread.join(timeout=10)
    assert answers["quiet"] == "2" and len(answers) == 5
    # The newcomer's prefill holds it alone; the busy tenant's rows join in small groups.
    assert engine.admitted == [1, 1, 2, 1]


class EnginelessFakeBackend(StaticFakeBackend):
    """A backend that offers continuous batching, but not for the model it loaded."""

    def continuous_engine(self) -> None:  # type: ignore[override]
        return None


class PlainFakeBackend:
    """A backend with no continuous batching at all."""

    def setup(self, device: str) -> None:
        """Nothing to load."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        return [Prediction(answer="plain", raw="") for _ in batch]


def test_the_backend_engine_picks_the_scheduler() -> None:
    engine = CountingFakeEngine()
    continuous = create_scheduler(StaticFakeBackend(engine), max_batch=8, wait_ms=0)
    assert isinstance(continuous, ContinuousScheduler) and continuous.engine is engine
    engineless = create_scheduler(EnginelessFakeBackend(engine), max_batch=8, wait_ms=0)
    assert isinstance(engineless, StaticScheduler)
    plain = create_scheduler(PlainFakeBackend(), max_batch=8, wait_ms=0)
    assert isinstance(plain, StaticScheduler)
    assert plain.submit(ask(1)).result(timeout=5).prediction.answer == "plain"
