"""Child processes started again whenever one dies unasked, with back-off.

`vlmq up` keeps its embedded Redis and its workers this way, and `vlmq worker` its one
worker process: a job that kills its worker (out of memory, a crash in native code) must
not take the worker away for good, and the service must come back by itself rather than
answer 503 until someone restarts it. The supervisor loads nothing itself; each worker it
starts is a fresh process that loads the model once.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import structlog

log = structlog.get_logger(__name__)

Starter = Callable[[], subprocess.Popen[bytes]]


@dataclass
class Child:
    """A named child process and how to start it."""

    name: str
    start: Starter
    process: subprocess.Popen[bytes]


class Supervisor:
    """Starts child processes and restarts any that exits until `forward` or `stop`.

    Restarts back off (doubling from `restart_delay_s` up to `max_delay_s`) while a child
    keeps dying young, as a worker does when its model cannot load; a child that ran for
    `healthy_after_s` resets its delay.
    """

    def __init__(
        self,
        restart_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        healthy_after_s: float = 10.0,
    ) -> None:
        self.restart_delay_s = restart_delay_s
        self.max_delay_s = max_delay_s
        self.healthy_after_s = healthy_after_s
        self.children: list[Child] = []
        self._stopping = threading.Event()
        self._stop_signal = signal.SIGTERM
        # Reentrant: `forward` may run in a signal handler while the main thread is in `add`.
        self._lock = threading.RLock()

    def add(self, name: str, start: Starter) -> Child:
        """Start a child now and keep it running (from a daemon thread of its own)."""
        with self._lock:
            child = Child(name, start, start())
            self.children.append(child)
            if self._stopping.is_set():  # a stop came while it started
                child.process.send_signal(self._stop_signal)
        threading.Thread(
            target=self._keep, args=(child,), name=f"vlmq-keep-{name}", daemon=True
        ).start()
        return child

    def forward(self, signum: int) -> None:
        """Stop restarting, and send `signum` to the live children, newest first."""
        with self._lock:
            self._stopping.set()
            self._stop_signal = signal.Signals(signum)
            for child in reversed(self.children):
                if child.process.poll() is None:
                    child.process.send_signal(signum)

    def wait(self, timeout_s: float | None) -> None:
        """Wait for every child to exit, killing any still there after `timeout_s` (None: no
        limit: a worker finishing its jobs takes as long as they take)."""
        with self._lock:
            processes = [child.process for child in self.children]
        for process in processes:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()

    def stop(self, timeout_s: float = 15) -> None:
        """Terminate the children, newest first, killing any that linger past `timeout_s`."""
        self.forward(signal.SIGTERM)
        self.wait(timeout_s)

    def _keep(self, child: Child) -> None:
        """Start the child again each time it dies, until the supervisor stops."""
        delay_s = self.restart_delay_s
        started = time.monotonic()
        while True:
            code = child.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= self.healthy_after_s:
                delay_s = self.restart_delay_s
            log.warning("child_died", name=child.name, exit_code=code, restarting_in_s=delay_s)
            # A stop asked for during the back-off ends it at once, and nothing is started.
            if self._stopping.wait(delay_s):
                return
            delay_s = min(self.max_delay_s, delay_s * 2)
            with self._lock:
                if self._stopping.is_set():
                    return
                started = time.monotonic()
                try:
                    child.process = child.start()
                except Exception:  # tried again after the next delay
                    log.exception("child_restart_failed", name=child.name)
                    continue
            log.warning("child_restarted", name=child.name)


def supervise(name: str, start: Starter, **backoff: float) -> int:
    """Run one child in the foreground, restarted whenever it dies, until SIGTERM or SIGINT
    (passed on to it); returns its exit code. `backoff`: `Supervisor`'s delays."""
    return supervise_all({name: start}, **backoff)[0]


def supervise_all(starters: dict[str, Starter], **backoff: float) -> list[int]:
    """Run children in the foreground, each restarted whenever it dies, until SIGTERM or
    SIGINT (passed on to them); returns their exit codes. `backoff`: `Supervisor`'s delays."""
    supervisor = Supervisor(**backoff)
    stopped = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopped.set()
        supervisor.forward(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = [supervisor.add(name, start) for name, start in starters.items()]
    while not stopped.wait(1.0):
        pass
    supervisor.wait(None)
    return [child.process.returncode for child in children]
