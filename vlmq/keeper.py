"""The child processes of `vlmq up`, started again whenever one dies.

`vlmq up` is the one command a new user runs; if its embedded Redis or a worker process
dies, the service must come back by itself rather than answer 503 until someone restarts it.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

Starter = Callable[[], subprocess.Popen[bytes]]


@dataclass
class Child:
    """A named child process and how to start it."""

    name: str
    start: Starter
    process: subprocess.Popen[bytes]


class Keeper:
    """Starts child processes and restarts any that exits while the keeper runs."""

    def __init__(self, check_interval_s: float = 1.0) -> None:
        self.children: list[Child] = []
        self.check_interval_s = check_interval_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, start: Starter) -> subprocess.Popen[bytes]:
        """Start a child and keep it running."""
        process = start()
        with self._lock:
            self.children.append(Child(name, start, process))
        return process

    def watch(self) -> None:
        """Restart dead children from a daemon thread until `stop`."""
        threading.Thread(target=self._run, name="vlmq-up-keeper", daemon=True).start()

    def _run(self) -> None:
        while not self._stopping.wait(self.check_interval_s):
            with self._lock:
                for child in self.children:
                    code = child.process.poll()
                    if code is None or self._stopping.is_set():
                        continue
                    log.warning("child_died", name=child.name, exit_code=code)
                    try:
                        child.process = child.start()
                        log.warning("child_restarted", name=child.name)
                    except Exception:
                        log.exception("child_restart_failed", name=child.name)

    def stop(self) -> None:
        """Stop watching, then terminate the children, newest first, killing any that linger."""
        self._stopping.set()
        with self._lock:
            children = [child.process for child in self.children]
        for process in reversed(children):
            process.terminate()
        for process in children:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
