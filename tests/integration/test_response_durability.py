"""A background response is a job: it survives its worker's SIGKILL, runs to the end once,
and its event stream, read live across the kill or replayed from any point afterwards, is
the same stream with no gap and no repeat (a new attempt starts a new content part)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.api import create_app
from services.core.notify import stream_key
from services.core.tables import Job
from tests.fake_stack import FakeStack
from tests.support import wait_until


def events_of(client: FlaskClient, auth: dict[str, str], path: str) -> list[dict[str, Any]]:
    """The Server-Sent Events of a streamed GET, read to the end."""
    response = client.get(path, headers=auth, buffered=False)
    assert response.status_code == 200
    body = b"".join(response.iter_encoded()).decode()
    events = []
    for block in body.split("\n\n"):
        data = [line[len("data: ") :] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads(data[0]))
    return events


def stream_kept(stack: FakeStack, job_id: str) -> bool:
    """Whether the job's row holds its token stream."""
    with stack.runtime.sessions() as session:
        return session.get(Job, job_id).stream_log is not None


@pytest.mark.slow
@pytest.mark.fake_backend("StreamingFakeBackend", lease_s=4, task_soft_time_limit_s=20)
def test_a_background_response_survives_a_sigkill_and_its_stream_resumes(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    first = fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.4")
    created = fake_stack.client.post(
        "/v1/responses",
        json={"input": "count", "background": True, "max_output_tokens": 8},
        headers=auth,
    ).get_json()
    assert created["status"] == "queued" and created["output"] == []
    path = f"/v1/responses/{created['id']}?stream=true"
    live: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: live.extend(events_of(fake_stack.client, auth, path)))
    reader.start()
    job_id = created["vlmq"]["job_id"]
    redis = fake_stack.runtime.redis
    wait_until(lambda: redis.xlen(stream_key(job_id)) >= 2, 20, "two words streamed")
    first.kill()
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.1")
    reader.join(timeout=60)
    assert not reader.is_alive()

    done = fake_stack.client.get(f"/v1/responses/{created['id']}", headers=auth).get_json()
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "one two three four"
    assert done["vlmq"]["job_id"] == job_id
    job = fake_stack.client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    assert job["attempts"] == 2
    assert fake_stack.calls("done") == 1  # the killed attempt never finished

    # The live reader saw every event once, in order; the first attempt's text is a part of
    # its own, closed before the second attempt's part begins.
    assert [event["sequence_number"] for event in live] == list(range(len(live)))
    parts = [e for e in live if e["type"] == "response.content_part.done"]
    assert [part["content_index"] for part in parts] == [0, 1]
    assert parts[0]["part"]["text"].startswith("one two")
    assert parts[1]["part"]["text"] == "one two three four"
    second_part = "".join(
        e["delta"]
        for e in live
        if e["type"] == "response.output_text.delta" and e["content_index"] == 1
    )
    assert second_part == "one two three four"
    assert live[-1]["type"] == "response.completed"
    assert live[-1]["response"]["output"] == done["output"]

    # Replayed afterwards, whole or after any event, by this API process or another one
    # (a replica, or the API after a restart), the stream is the same.
    assert events_of(fake_stack.client, auth, path) == live
    replica = create_app(fake_stack.settings).test_client()
    assert events_of(replica, auth, path) == live
    middle = parts[0]["sequence_number"]
    resumed = events_of(replica, auth, f"{path}&starting_after={middle}")
    assert resumed == live[middle + 1 :]

    # Once Redis has let the token stream go, the stream kept with the row replays alike.
    redis.delete(stream_key(job_id))
    assert events_of(replica, auth, path) == live
    assert events_of(replica, auth, f"{path}&starting_after={middle}") == live[middle + 1 :]


@pytest.mark.fake_backend("StreamingFakeBackend", lease_s=4, task_soft_time_limit_s=20)
def test_a_cancelled_response_streams_the_same_text_live_and_replayed(
    fake_stack: FakeStack, auth: dict[str, str]
) -> None:
    fake_stack.start_worker(VLMQ_FAKE_SLEEP_S="0.3")
    created = fake_stack.client.post(
        "/v1/responses",
        json={"input": "count to cancel", "background": True, "max_output_tokens": 8},
        headers=auth,
    ).get_json()
    path = f"/v1/responses/{created['id']}?stream=true"
    live: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: live.extend(events_of(fake_stack.client, auth, path)))
    reader.start()
    redis = fake_stack.runtime.redis
    wait_until(lambda: redis.xlen(stream_key(created["vlmq"]["job_id"])) >= 1, 20, "a word")
    cancelled = fake_stack.client.post(
        f"/v1/responses/{created['id']}/cancel", headers=auth
    ).get_json()
    assert cancelled["status"] == "cancelled"
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert live[-1]["type"] == "response.failed"
    assert live[-1]["response"]["status"] == "cancelled"
    # Whatever the worker sent after the cancel is in neither, nor in the stream kept with
    # the row once Redis has let it go.
    assert events_of(fake_stack.client, auth, path) == live
    job_id = created["vlmq"]["job_id"]
    wait_until(lambda: stream_kept(fake_stack, job_id), 20, "the attempt's stream kept")
    redis.delete(stream_key(job_id))
    assert events_of(fake_stack.client, auth, path) == live
