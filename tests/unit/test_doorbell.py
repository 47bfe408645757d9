"""The doorbell of a model worker: an announcement of N jobs wakes N idle task threads, not
all of them, and one made while a thread looked for work is never slept through."""

from __future__ import annotations

import threading
import time

import redis

from tests.support import wait_until
from workers.doorbell import Doorbell, parse

# The doorbell is driven by hand here (`ring`); its client never connects.
UNCONNECTED = redis.Redis(host="127.0.0.1", port=1)


def waiting_threads(doorbell: Doorbell, count: int, woken: list[int]) -> list[threading.Thread]:
    """`count` idle task threads, each waiting (up to 30 s) for an announcement after the
    rings it saw; each appends its number to `woken` when it wakes."""
    lock = threading.Lock()

    def idle(number: int) -> None:
        doorbell.wait(0, 30)
        with lock:
            woken.append(number)

    threads = [threading.Thread(target=idle, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_an_announcement_of_two_jobs_wakes_two_of_five_idle_threads() -> None:
    doorbell = Doorbell(UNCONNECTED, "arrivals")
    woken: list[int] = []
    threads = waiting_threads(doorbell, 5, woken)
    wait_until(lambda: all(t.is_alive() for t in threads), 5, "threads waiting")
    time.sleep(0.1)  # all five inside their wait
    doorbell.ring(2, interactive=False)
    wait_until(lambda: len(woken) == 2, 5, "two threads woken")
    time.sleep(0.2)
    assert len(woken) == 2, "an announcement woke more threads than it named jobs"
    doorbell.stop()
    wait_until(lambda: len(woken) == 5, 5, "every thread woken by the stop")


def test_an_announcement_made_while_a_thread_looked_is_not_slept_through() -> None:
    doorbell = Doorbell(UNCONNECTED, "arrivals")
    seen = doorbell.rings  # the thread notes the rings, then looks for work (none)...
    doorbell.ring(1, interactive=False)  # ...while work is announced
    started = time.monotonic()
    doorbell.wait(seen, 30)
    assert time.monotonic() - started < 1


def test_interactive_work_wakes_the_newcomer_watch_and_batch_work_does_not() -> None:
    doorbell = Doorbell(UNCONNECTED, "arrivals")
    seen = doorbell.interactive_rings
    doorbell.ring(3, interactive=False)
    assert doorbell.interactive_rings == seen
    doorbell.ring(1, interactive=True)
    started = time.monotonic()
    doorbell.wait_interactive(seen, 30)
    assert time.monotonic() - started < 1


def test_announcements_are_parsed_with_their_job_count_and_kind() -> None:
    assert parse(b"3 0") == (3, False)
    assert parse("2 1") == (2, True)
    # An earlier version announced interactive work with "1" alone.
    assert parse(b"1") == (1, True)
    assert parse(b"garbage") == (1, True)
