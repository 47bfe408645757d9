"""The fair queue's announcements of new work (`FairQueue.push` publishes them), heard by one
subscriber thread per worker process and passed on to the threads waiting for work.

Each announcement wakes as many waiting threads as it names jobs, not all of them: a flood
of single jobs wakes one thread per job, and no herd of idle threads races for each. A
thread notes the count of announcements (`rings`) before it looks for work and waits only
if none came since, so an announcement made while it looked is never slept through. A
thread that misses one anyway (Redis reconnecting) looks again after `fallback_s`.
"""

from __future__ import annotations

import threading
import time

import redis
import structlog

log = structlog.get_logger(__name__)
# How long the subscriber waits for a message before it looks at its connection again.
LISTEN_S = 1.0


class Doorbell:
    """Counts the announcements on one channel and wakes the threads waiting for them."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.client, self.channel = client, channel
        lock = threading.Lock()
        # Idle task threads wait on the first, the newcomer watch on the second.
        self._work = threading.Condition(lock)
        self._interactive = threading.Condition(lock)
        # Announcements heard so far: of any work, and of interactive work.
        self.rings = 0
        self.interactive_rings = 0
        self._stopping = threading.Event()
        self._subscribed = threading.Event()

    def start(self) -> None:
        """Listen from a daemon thread; returns once subscribed (or after a few seconds, when
        Redis is down: the waiters' fallback covers the gap)."""
        threading.Thread(target=self._listen, name="vlmq-doorbell", daemon=True).start()
        self._subscribed.wait(5)

    def stop(self) -> None:
        """Stop listening, and wake every waiter."""
        self._stopping.set()
        with self._work:
            self._work.notify_all()
            self._interactive.notify_all()

    def wait(self, seen: int, timeout_s: float) -> None:
        """Wait until work is announced after `seen` rings (at once if it was), or
        `timeout_s` passes."""
        with self._work:
            if self.rings == seen and not self._stopping.is_set():
                self._work.wait(timeout_s)

    def wait_interactive(self, seen: int, timeout_s: float) -> None:
        """Wait until interactive work is announced after `seen` interactive rings (at once if
        it was), or `timeout_s` passes."""
        with self._interactive:
            self._interactive.wait_for(
                lambda: self.interactive_rings != seen or self._stopping.is_set(), timeout_s
            )

    def ring(self, jobs: int, interactive: bool) -> None:
        """Count an announcement of `jobs` jobs: wake that many idle task threads (every one
        when `jobs` is 0), and the newcomer watch when the work is interactive."""
        with self._work:
            self.rings += 1
            if jobs > 0:
                self._work.notify(jobs)
            else:
                self._work.notify_all()
            if interactive:
                self.interactive_rings += 1
                self._interactive.notify_all()

    def _listen(self) -> None:
        pubsub: redis.client.PubSub | None = None
        while not self._stopping.is_set():
            try:
                if pubsub is None:
                    pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    self._subscribed.set()
                message = pubsub.get_message(timeout=LISTEN_S)
                if message is not None:
                    self.ring(*parse(message.get("data")))
            except (redis.RedisError, OSError):
                log.warning("doorbell_reconnecting")
                if pubsub is not None:
                    pubsub.close()
                pubsub = None
                # Whatever was announced meanwhile is lost: let every waiter look.
                self.ring(0, interactive=True)
                time.sleep(LISTEN_S)


def parse(data: object) -> tuple[int, bool]:
    """An announcement's job count and whether it holds interactive work ("<jobs> <0|1>"; an
    announcement of an earlier version said only "1", for interactive work)."""
    text = data.decode() if isinstance(data, bytes) else str(data)
    jobs, _, interactive = text.partition(" ")
    try:
        return max(1, int(jobs)), interactive != "0"
    except ValueError:
        return 1, True
