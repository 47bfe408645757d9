"""The static scheduler: who shares a model call, and who waits for whom."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.core.config import Settings
from services.core.inputs.prompts import GenerationParams
from workers.backends.base import Prediction, PredictRequest
from workers.model_requests import company_limit
from workers.schedulers import CallResult, StaticScheduler


class RecordingFakeBackend:
    """Answers instantly with the batch size; records each call's size."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()  # a call has begun (it may be held by `release`)

    def setup(self, device: str) -> None:
        """Nothing to load."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        self.entered.set()
        self.release.wait()
        self.calls.append(len(batch))
        if self.fail:
            raise RuntimeError("model exploded")
        return [Prediction(answer=str(len(batch)), raw="") for _ in batch]


def request() -> PredictRequest:
    return PredictRequest([{"role": "user", "content": "hi"}], GenerationParams())


def test_a_lone_request_does_not_wait_for_company() -> None:
    backend = RecordingFakeBackend()
    # Were it to wait for company, it would wait a minute and miss the timeout.
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=60_000)
    assert scheduler.submit(request()).result(timeout=5).batch_size == 1
    assert backend.calls == [1]


def test_requests_on_their_way_are_waited_for_and_batched() -> None:
    backend = RecordingFakeBackend()
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=300)
    futures = []

    def arrive() -> None:
        with scheduler.incoming():
            time.sleep(0.05)  # a gap: the request is on its way, and the scheduler knows it
        futures.append(scheduler.submit(request()))

    threads = [threading.Thread(target=arrive) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = [future.result(timeout=5) for future in futures]
    assert backend.calls == [4]
    assert all(result.batch_size == 4 for result in results)


def test_batches_never_exceed_max_batch() -> None:
    backend = RecordingFakeBackend()
    backend.release.clear()  # hold the first call so the rest pile up
    scheduler = StaticScheduler(backend, max_batch=3, wait_ms=50)
    futures = [scheduler.submit(request()) for _ in range(7)]
    assert backend.entered.wait(5)
    backend.release.set()
    for future in futures:
        future.result(timeout=5)
    assert sum(backend.calls) == 7 and max(backend.calls) <= 3


def test_a_job_on_its_last_attempt_runs_alone() -> None:
    backend = RecordingFakeBackend()
    backend.release.clear()
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=50)
    first = scheduler.submit(request())
    assert backend.entered.wait(5)  # the first call holds the model
    others = [scheduler.submit(request()) for _ in range(2)]
    isolated = scheduler.submit(request(), company=1)
    backend.release.set()
    assert isolated.result(timeout=5).batch_size == 1
    assert first.result(timeout=5).batch_size == 1
    assert [f.result(timeout=5).batch_size for f in others] == [2, 2]


class OnePoisonFakeBackend(RecordingFakeBackend):
    """Fails any call that holds the request asking "poison"."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        self.entered.set()
        self.release.wait()
        self.calls.append(len(batch))
        if any(r.messages[0]["content"] == "poison" for r in batch):
            raise ValueError("absolute aspect ratio must be smaller than 200")
        return [Prediction(answer="ok", raw="") for _ in batch]


def test_a_failed_call_is_retried_member_by_member() -> None:
    backend = OnePoisonFakeBackend()
    backend.release.clear()
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=50)
    blocker = scheduler.submit(request())
    assert backend.entered.wait(5)  # the blocker's call holds the model
    poison = PredictRequest([{"role": "user", "content": "poison"}], GenerationParams())
    futures = [scheduler.submit(request()) for _ in range(3)] + [scheduler.submit(poison)]
    backend.release.set()
    with pytest.raises(ValueError, match="aspect ratio"):
        futures[-1].result(timeout=5)
    assert blocker.result(timeout=5).prediction.answer == "ok"
    assert [f.result(timeout=5).prediction.answer for f in futures[:3]] == ["ok"] * 3
    assert backend.calls == [1, 4, 1, 1, 1, 1]


def test_a_failed_call_fails_every_waiter() -> None:
    scheduler = StaticScheduler(RecordingFakeBackend(fail=True), max_batch=8, wait_ms=10)
    futures = [scheduler.submit(request()) for _ in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="exploded"):
            future.result(timeout=5)


def test_retried_jobs_share_smaller_calls_only_with_each_other() -> None:
    backend = RecordingFakeBackend()
    backend.release.clear()
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=50)
    blocker = scheduler.submit(request())
    assert backend.entered.wait(5)  # the blocker's call holds the model
    retried = [scheduler.submit(request(), company=2) for _ in range(4)]
    fresh = [scheduler.submit(request()) for _ in range(3)]
    backend.release.set()
    assert blocker.result(timeout=5).batch_size == 1
    assert [f.result(timeout=5).batch_size for f in retried] == [2, 2, 2, 2]
    assert all(f.result(timeout=5).batch_size == 3 for f in fresh)


def test_company_limit_shrinks_with_each_attempt_and_the_last_runs_alone() -> None:
    settings = Settings(_env_file=None, max_batch=16, max_attempts=4)  # type: ignore[call-arg]
    assert [company_limit(attempt, settings) for attempt in (1, 2, 3, 4)] == [16, 4, 1, 1]
    last_of_three = Settings(_env_file=None, max_batch=32, max_attempts=3)  # type: ignore[call-arg]
    assert [company_limit(attempt, last_of_three) for attempt in (1, 2, 3)] == [32, 8, 1]


def test_a_hung_model_call_ends_the_worker_instead_of_failing_every_job() -> None:
    backend = RecordingFakeBackend()
    backend.release.clear()  # the first call hangs
    stuck: list[bool] = []
    scheduler = StaticScheduler(
        backend, max_batch=1, wait_ms=0, on_stuck=lambda: stuck.append(True)
    )
    scheduler.submit(request())
    assert backend.entered.wait(5)  # the first call hangs in the model
    with pytest.raises(TimeoutError, match="stuck"):
        scheduler.run(request(), company=0, time_limit_s=0.2)
    assert stuck == [True]
    backend.release.set()


class SlowPoisonFakeBackend(OnePoisonFakeBackend):
    """Every call takes `seconds`; a call holding "poison" fails at its end."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        time.sleep(self.seconds)
        return super().predict(batch)


def test_each_retried_member_gets_its_own_time_limit() -> None:
    # The shared call fails at 0.3 s and four solo calls of 0.3 s follow: the last one ends
    # 1.5 s after the shared call began, past a 0.5 s limit counted from there.
    backend = SlowPoisonFakeBackend(0.3)
    backend.release.clear()  # a first call holds the model while the four queue up
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=100)
    blocker = scheduler.submit(request())
    assert backend.entered.wait(5)  # the blocker's call holds the model
    poison = PredictRequest([{"role": "user", "content": "poison"}], GenerationParams())
    requests = [request(), request(), request(), poison]
    with ThreadPoolExecutor(4) as pool:
        running = [
            pool.submit(_outcome, lambda r=r: scheduler.run(r, company=0, time_limit_s=0.5))
            for r in requests
        ]
        time.sleep(0.1)  # a gap: the four requests join the queue behind the blocker
        backend.release.set()
        outcomes = [future.result(timeout=10) for future in running]
    assert blocker.result(timeout=5).prediction.answer == "ok"
    assert backend.calls == [1, 4, 1, 1, 1, 1]
    assert outcomes[:3] == ["ok", "ok", "ok"]
    assert outcomes[3] == "ValueError"


def _outcome(call: Callable[[], CallResult]) -> str:
    try:
        return call().prediction.answer
    except Exception as exc:  # noqa: BLE001 - the test compares outcomes
        return type(exc).__name__


class StreamThenFailFakeBackend(RecordingFakeBackend):
    """Streams a word to every request of a shared call, then fails the call."""

    def predict(self, batch: list[PredictRequest]) -> list[Prediction]:
        self.calls.append(len(batch))
        if len(batch) > 1:
            for item in batch:
                if item.on_text is not None:
                    item.on_text("partial", [])
            raise RuntimeError("probability tensor contains inf")
        return [Prediction(answer="ok", raw="") for _ in batch]


def test_a_member_that_streamed_text_is_not_retried() -> None:
    backend = StreamThenFailFakeBackend()
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=100)
    streamed: list[str] = []
    streaming = PredictRequest(
        [{"role": "user", "content": "hi"}],
        GenerationParams(),
        on_text=lambda text, _logprobs: streamed.append(text),
    )
    quiet = scheduler.submit(request())
    loud = scheduler.submit(streaming)
    assert quiet.result(timeout=5).prediction.answer == "ok"
    with pytest.raises(RuntimeError):
        loud.result(timeout=5)
    assert streamed == ["partial"]  # never sent twice
    assert backend.calls == [2, 1]


def test_a_failed_call_of_one_is_not_run_again() -> None:
    backend = OnePoisonFakeBackend()
    scheduler = StaticScheduler(backend, max_batch=8, wait_ms=0)
    poison = PredictRequest([{"role": "user", "content": "poison"}], GenerationParams())
    with pytest.raises(ValueError):
        scheduler.submit(poison).result(timeout=5)
    assert backend.calls == [1]
