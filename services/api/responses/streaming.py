"""The event stream of a response, as OpenAI's Responses API sends it, resumable.

The events are a function of the job's token stream in Redis (its text, and where a new
attempt began after a worker was lost) and of the job's final row, so every API process
numbers them the same way: a client that lost its connection asks for the events after
the last `sequence_number` it read and gets them with no gap and no repeat. A new attempt
at the job starts a new content part, so text already sent is never sent again as if it
continued. The token stream lives in Redis `notify.STREAM_TTL_S` after its last entry; a
background response's stream is also kept with its row when an attempt ends, so its events
replay alike for as long as the response is kept. Any other finished response whose stream
is gone has its whole text in one delta.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from services.core import notify
from services.core.jobs import service as jobs
from services.core.responses.responses_api import (
    ResponseObject,
    final_part,
    message_id,
    message_item,
    output_logprobs,
    status_of,
    text_part,
)
from services.core.runtime import Runtime
from services.core.tables import Job, JobStatus

# How long a reader that saw the stream's end waits for the job's row to be final before
# reading on (the worker writes the row just after the end; a retry writes more text).
END_WAIT_S = 5.0
# The event that ends a stream, by the response's final status (OpenAI's stream has no
# event of its own for a cancelled response: `response.failed` carries its status).
FINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}


def sse(event: dict[str, Any]) -> str:
    """One Server-Sent Event, named by its type as OpenAI names them."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def stream_response(runtime: Runtime, job: Job, *, after: int = -1) -> Iterator[str]:
    """The response's events numbered after `after`, as Server-Sent Events; it follows the
    job live until it ends or `sync_timeout_s` passes (then the client resumes)."""
    deadline = time.monotonic() + runtime.settings.sync_timeout_s
    for number, event in enumerate(response_events(runtime, job, deadline)):
        if number > after:
            yield sse({**event, "sequence_number": number})


def response_events(runtime: Runtime, job: Job, deadline: float) -> Iterator[dict[str, Any]]:
    """Every event of the response from its creation, without numbers."""
    background = bool((job.response or {}).get("background"))
    yield {
        "type": "response.created",
        "response": ResponseObject.of(job, "queued" if background else "in_progress").dump(),
    }
    if background:
        yield {"type": "response.queued", "response": ResponseObject.of(job, "queued").dump()}
    yield {"type": "response.in_progress", "response": ResponseObject.of(job, "in_progress").dump()}
    yield {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": message_item(job, "in_progress", []),
    }
    text = TextPart(job)
    yield text.added()
    for entry in entries(runtime, job, deadline):
        if entry.attempt and text.text:
            yield from text.closed(text_part(text.text))
            text = TextPart(job, text.index + 1)
            yield text.added()
        elif entry.delta or entry.logprobs:
            yield text.delta(entry.delta, entry.logprobs)
    if time.monotonic() > deadline:
        return  # the reader's time is up (maybe mid-text); it resumes from its last event
    job, ended = jobs.wait_until_terminal(runtime.sessions, runtime.job_ends, job, 0.0)
    if not ended:
        return
    final = job.output or "" if job.status == JobStatus.SUCCEEDED else text.text
    if not final.startswith(text.text):
        # The text streamed is not the answer's beginning (its stream expired, or the
        # answer came from another attempt): the answer gets a part of its own.
        yield from text.closed(text_part(text.text))
        text = TextPart(job, text.index + 1)
        yield text.added()
    if final != text.text:
        yield text.delta(final[len(text.text) :], [])
    status = status_of(job)
    part = final_part(job) if job.status == JobStatus.SUCCEEDED else text_part(text.text)
    yield from text.closed(part)
    item_status = "completed" if status == "completed" else "incomplete"
    yield {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": message_item(job, item_status, [part]),
    }
    yield {"type": FINAL_EVENTS[status], "response": ResponseObject.of(job).dump()}


def entries(runtime: Runtime, job: Job, deadline: float) -> Iterator[notify.StreamEvent]:
    """The entries of the job's token stream, read live until the job has ended and every
    entry is read (a canceled job's up to its cancel mark), or the deadline passes."""
    if job.job_status.is_terminal():
        yield from kept_entries(runtime, job)
        return
    last = "0-0"
    for entry in notify.stream_entries(runtime.redis, job.id, block_ms=1000, after=last):
        if entry is not None:
            if entry.canceled:
                return
            last = entry.entry_id
            yield entry
        if time.monotonic() > deadline:
            return
        if entry is None and jobs.has_ended(runtime.sessions, job.id):
            break
        if entry is not None and entry.done:
            wait_s = min(END_WAIT_S, max(0.0, deadline - time.monotonic()))
            _, ended = jobs.wait_until_terminal(runtime.sessions, runtime.job_ends, job, wait_s)
            if ended:
                break
    ended_as, _ = jobs.wait_until_terminal(runtime.sessions, runtime.job_ends, job, 0.0)
    if ended_as.status == JobStatus.CANCELED:
        # Its cancel mark follows the row's change at once; until it comes, more text may.
        yield from read_until_canceled(runtime, job.id, last)
    else:
        # Entries written between the last read and the job's end.
        yield from read_all(runtime, job.id, last)


def kept_entries(runtime: Runtime, job: Job) -> Iterator[notify.StreamEvent]:
    """A finished job's stream (up to a cancel mark): from Redis while it is there, else as
    kept with its row."""
    if job.stream_log is not None and not runtime.redis.exists(notify.stream_key(job.id)):
        return up_to_cancel(notify.logged_events(job.stream_log))
    return read_all(runtime, job.id, "0-0")


def read_all(runtime: Runtime, job_id: str, after: str) -> Iterator[notify.StreamEvent]:
    """The stream's entries after `after` (up to a cancel mark), without waiting for more."""
    entries = notify.stream_entries(runtime.redis, job_id, block_ms=0, after=after)
    return up_to_cancel(entry for entry in entries if entry is not None)


def up_to_cancel(entries: Iterator[notify.StreamEvent]) -> Iterator[notify.StreamEvent]:
    """The entries before the stream's cancel mark (all of them when it has none)."""
    for entry in entries:
        if entry.canceled:
            return
        yield entry


def read_until_canceled(runtime: Runtime, job_id: str, after: str) -> Iterator[notify.StreamEvent]:
    """The stream's entries after `after` up to the cancel mark (waiting for it up to
    `END_WAIT_S`: a cancel that wrote no mark, as Redis was down, ends the text there)."""
    give_up_at = time.monotonic() + END_WAIT_S
    for entry in notify.stream_entries(runtime.redis, job_id, block_ms=200, after=after):
        if entry is not None and entry.canceled:
            return
        if entry is not None:
            yield entry
        elif time.monotonic() > give_up_at:
            return


class TextPart:
    """The events of one `output_text` part of the response's message."""

    def __init__(self, job: Job, index: int = 0) -> None:
        self.item_id = message_id(job)
        self.index = index
        self.text = ""
        self.logprobs = bool((job.params or {}).get("logprobs"))

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "item_id": self.item_id,
            "output_index": 0,
            "content_index": self.index,
            **fields,
        }

    def added(self) -> dict[str, Any]:
        """`response.content_part.added`."""
        return self._event("response.content_part.added", part=text_part(""))

    def delta(self, delta: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
        """`response.output_text.delta`, adding `delta` to the part's text."""
        self.text += delta
        entries = output_logprobs(logprobs) if self.logprobs else []
        return self._event("response.output_text.delta", delta=delta, logprobs=entries)

    def closed(self, part: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """`response.output_text.done` and `response.content_part.done` of the part."""
        done = self._event(
            "response.output_text.done", text=part["text"], logprobs=part.get("logprobs") or []
        )
        yield done
        yield self._event("response.content_part.done", part=part)
