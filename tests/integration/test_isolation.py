"""One request that fails a batched model call fails alone; every other request answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fake_stack import FakeStack, job, submit, terminal
from tests.support import wait_until


@pytest.mark.fake_backend("PoisonFakeBackend")
def test_a_poison_request_fails_alone_with_words_a_client_can_act_on(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.5")
    # A first job holds the model while the others queue up, so they share one call.
    blocker = submit(fake_stack, auth, "first")
    wait_until(lambda: fake_stack.calls("call") == 1, 30, "the first job's model call")
    questions = [f"question {n}" for n in range(11)] + ["poison"]
    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(lambda q: submit(fake_stack, auth, q), questions))
    jobs = [terminal(fake_stack, auth, job_id) for job_id in ids]
    assert terminal(fake_stack, auth, blocker)["status"] == "succeeded"

    *healthy, poison = jobs
    assert [j["status"] for j in healthy] == ["succeeded"] * 11
    assert [j["output"] for j in healthy] == [f"echo: {q}" for q in questions[:11]]
    assert poison["status"] == "failed"
    error = poison["error"]
    assert error["type"] == "inference_error"
    assert "aspect ratio" in error["message"] and "ValueError" not in error["message"]
    # At least one shared call failed and was retried member by member.
    sizes = [int(line.split("size=")[1].split()[0]) for line in call_lines(fake_stack)]
    assert any(size > 1 for size in sizes) and sizes.count(1) >= 2
    assert job(fake_stack, auth, poison["id"])["attempts"] == 1


def call_lines(stack: FakeStack) -> list[str]:
    """The backend's calls, one line each (`call size=N pid`)."""
    return [line for line in stack.call_log.read_text().splitlines() if line.startswith("call")]
