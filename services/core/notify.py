"""Transient signals over Redis: job-finished wake-ups (pub/sub) and token streams.

Waiters are woken by pub/sub (one pattern subscription per process, `JobEnds`) instead of
polling the database; generated text travels
from the worker to the API in a Redis stream per job (a stream, not pub/sub, so a reader
that subscribes late still reads from the start). Losing either only delays a reader:
the database stays the source of truth.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog

log = structlog.get_logger(__name__)

DONE_CHANNEL_PREFIX = "vlmq:job-done:"
STREAM_PREFIX = "vlmq:tokens:"
STREAM_TTL_S = 600
POLL_INTERVAL_S = 1.0


# --- job-finished wake-ups ---------------------------------------------------------------

# How many recent job ends each process remembers (with their final fields), so that a
# waiter that starts just after its job ended needs no database read.
RECENT_ENDS = 1024
# A job end whose final fields are larger than this is announced without them.
MAX_ENDING_BYTES = 16 * 1024


def publish_job_done(
    client: redis.Redis, job_id: str, ending: dict[str, Any] | None = None
) -> None:
    """Tell anyone waiting that the job reached a terminal state, with its final fields if
    given (as committed: waiters may answer from them without reading the row)."""
    data = json.dumps(ending, separators=(",", ":")).encode() if ending is not None else b""
    client.publish(DONE_CHANNEL_PREFIX + job_id, data if len(data) <= MAX_ENDING_BYTES else b"")


def publish_batch_canceled(client: redis.Redis, batch_id: str) -> None:
    """Tell the workers running the batch's lines that it was canceled. Batch ids share
    the job-end channel: a line's row checks `JobEnds.ended(batch_id)` at every decode step."""
    client.publish(DONE_CHANNEL_PREFIX + batch_id, b"")


@dataclass
class _Waiter:
    woken: threading.Event = field(default_factory=threading.Event)
    ending: dict[str, Any] | None = None


class JobEnds:
    """Every job end of the deployment, heard on one pattern subscription per process.

    One connection per process instead of a subscription per waiting request: a wait costs
    no round trip, and a job that ends between its submit and the wait is found among the
    recent ends. While the subscription is down, waiters fall back to the database.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._recent: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        # When the subscription now open was confirmed (time.time()); None while down.
        self._heard_since: float | None = None
        self._pid: int | None = None

    def hears_everything_since(self, moment: float) -> bool:
        """Whether every job end published since `moment` (a Unix time) reaches this process."""
        self._start_once()
        since = self._heard_since
        return since is not None and since < moment

    def ended(self, job_id: str) -> bool:
        """Whether this process heard the job end lately (no round trip: a running job's
        row checks it at every decode step)."""
        self._start_once()
        with self._lock:
            return job_id in self._recent

    def wait(
        self,
        job_id: str,
        is_done: Callable[[], bool],
        timeout_s: float,
        *,
        created_at: float | None = None,
    ) -> tuple[bool, dict[str, Any] | None]:
        """Block until the job is done or `timeout_s` passes: (done, its final fields if the
        end carried them). `is_done` reads the database; it is skipped while the end is
        sure to be heard (the job was created, at `created_at`, after the subscription)."""
        if timeout_s <= 0:
            return is_done(), None
        self._start_once()
        trusted = created_at is not None and self.hears_everything_since(created_at)
        waiter = _Waiter()
        with self._lock:
            ended = job_id in self._recent
            ending = self._recent.get(job_id)
            if not ended:
                self._waiters.setdefault(job_id, []).append(waiter)
        if ended:  # the database is read outside the lock: the listener must never wait
            return (True, ending) if ending is not None else (is_done(), None)
        try:
            if not trusted and is_done():
                return True, None
            deadline = time.monotonic() + timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                # Wake at least every few seconds: a lost notification must not hang anyone.
                woken = waiter.woken.wait(min(remaining, 5.0))
                if woken and waiter.ending is not None:
                    return True, waiter.ending
                waiter.woken.clear()
                if is_done():
                    return True, None
            return is_done(), None
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id, [])
                if waiter in waiting:
                    waiting.remove(waiter)
                if not waiting:
                    self._waiters.pop(job_id, None)

    def _start_once(self) -> None:
        """Start the listening thread in this process (again after a fork)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._heard_since = None
        threading.Thread(target=self._listen, name="vlmq-job-ends", daemon=True).start()

    def _listen(self) -> None:
        backoff_s = 0.1
        while True:
            pubsub = self.client.pubsub()
            try:
                pubsub.psubscribe(DONE_CHANNEL_PREFIX + "*")
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        self._subscribed()
                        backoff_s = 0.1
                    elif message["type"] == "pmessage":
                        self._heard(message["channel"], message["data"])
            except Exception:
                log.warning("job_ends_subscription_lost", retry_in_s=backoff_s)
                self._lost()
                time.sleep(backoff_s)
                backoff_s = min(5.0, backoff_s * 2)
            finally:
                pubsub.close()

    def _subscribed(self) -> None:
        with self._lock:
            self._heard_since = time.time()
        self._wake_all()  # ends published while no subscription was open were missed

    def _lost(self) -> None:
        with self._lock:
            self._heard_since = None
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.woken.set()

    def _heard(self, channel: bytes, data: bytes) -> None:
        job_id = channel.decode()[len(DONE_CHANNEL_PREFIX) :]
        try:
            ending = json.loads(data) if data and data != b"done" else None
        except ValueError:
            ending = None
        with self._lock:
            self._recent[job_id] = ending
            self._recent.move_to_end(job_id)
            while len(self._recent) > RECENT_ENDS:
                self._recent.popitem(last=False)
            for waiter in self._waiters.get(job_id, []):
                waiter.ending = ending
                waiter.woken.set()


# --- token streams -----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamEvent:
    """A piece of text (with its tokens' log-probabilities, when asked for), or the end of
    the stream."""

    delta: str = ""
    done: bool = False
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    # A new attempt at the job starts here (its text replaces the earlier attempt's).
    attempt: int = 0
    # The job was canceled here: nothing after it counts.
    canceled: bool = False
    # The entry's id in the stream: a reader resumes after it.
    entry_id: str = ""


# The fields of a stream entry kept in a job's row, with their defaults (its id is not kept:
# a reader of the kept stream never resumes inside it).
LOGGED_FIELDS: dict[str, Any] = {
    "delta": "",
    "done": False,
    "logprobs": [],
    "attempt": 0,
    "canceled": False,
}


def stream_key(job_id: str) -> str:
    """The Redis key of a job's token stream."""
    return STREAM_PREFIX + job_id


def publish_delta(
    client: redis.Redis, job_id: str, delta: str, logprobs: list[dict[str, Any]] | None = None
) -> None:
    """Append generated text (and the log-probabilities of its tokens) to the job's stream."""
    fields = {"delta": delta.encode()}
    if logprobs:
        fields["logprobs"] = json.dumps(logprobs).encode()
    append_to_stream(client, job_id, fields)


def publish_attempt(client: redis.Redis, job_id: str, attempt: int) -> None:
    """Mark the start of a new attempt at the job (an earlier one was cut off)."""
    append_to_stream(client, job_id, {"attempt": str(attempt).encode()})


def publish_cancel(client: redis.Redis, job_id: str) -> None:
    """Mark the point where the job was canceled: readers take no text after it (the worker
    may still send a token or two before its row leaves the model's batch)."""
    append_to_stream(client, job_id, {"canceled": b"1"})


def publish_end(client: redis.Redis, job_id: str) -> None:
    """Mark the job's stream finished."""
    append_to_stream(client, job_id, {"done": b"1"})


def append_to_stream(client: redis.Redis, job_id: str, fields: dict[str, bytes]) -> None:
    """Add one entry to the job's stream and keep the stream alive a while longer."""
    key = stream_key(job_id)
    pipeline = client.pipeline(transaction=False)
    pipeline.xadd(key, fields)  # type: ignore[arg-type]
    pipeline.expire(key, STREAM_TTL_S)
    pipeline.execute()


def read_stream(client: redis.Redis, job_id: str, block_ms: int) -> Iterator[StreamEvent | None]:
    """Events of the job's stream from its start, up to its first end; yields None each time
    `block_ms` passes idle."""
    for event in stream_entries(client, job_id, block_ms):
        if event is not None and (event.attempt or event.canceled):
            continue
        yield event
        if event is not None and event.done:
            return


def stream_entries(
    client: redis.Redis, job_id: str, block_ms: int, after: str = "0-0"
) -> Iterator[StreamEvent | None]:
    """Every entry of the job's stream after the entry `after` (ends and new attempts
    included), for as long as the reader reads; None each time `block_ms` passes idle
    (`block_ms` 0: once, when the entries so far have been read)."""
    last_id: Any = after
    key = stream_key(job_id)
    while True:
        answer: Any = client.xread({key: last_id}, block=block_ms or None, count=100)
        if not answer:
            yield None
            if not block_ms:
                return
            continue
        for entry_id, fields in answer[0][1]:
            last_id = entry_id
            yield stream_event(entry_id, fields)


def stream_log(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """Every entry of the job's stream so far, as JSON to keep with the job's row (read back
    by `logged_events`); an entry's fields at their defaults are left out."""
    kept = []
    entries: Any = client.xrange(stream_key(job_id))
    for entry_id, fields in entries:
        event = stream_event(entry_id, fields)
        kept.append(
            {
                name: getattr(event, name)
                for name, default in LOGGED_FIELDS.items()
                if getattr(event, name) != default
            }
        )
    return kept


def logged_events(log: list[dict[str, Any]]) -> Iterator[StreamEvent]:
    """The entries of a stream kept by `stream_log`."""
    for entry in log:
        yield StreamEvent(**entry)


def stream_event(entry_id: bytes, fields: dict[bytes, bytes]) -> StreamEvent:
    """One entry of a job's stream."""
    ident = entry_id.decode()
    if fields.get(b"done"):
        return StreamEvent(done=True, entry_id=ident)
    if fields.get(b"attempt"):
        return StreamEvent(attempt=int(fields[b"attempt"]), entry_id=ident)
    if fields.get(b"canceled"):
        return StreamEvent(canceled=True, entry_id=ident)
    logprobs = json.loads(fields[b"logprobs"]) if fields.get(b"logprobs") else []
    return StreamEvent(delta=fields.get(b"delta", b"").decode(), logprobs=logprobs, entry_id=ident)
