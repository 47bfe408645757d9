"""Keep a worker process alive: a job that kills its worker (out of memory, a crash in
native code) must not take the worker away for good. The supervisor loads nothing itself;
each worker it starts is a fresh process that loads the model once."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from types import FrameType

import structlog

log = structlog.get_logger(__name__)


def supervise(
    command: list[str],
    restart_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
    healthy_after_s: float = 10.0,
) -> int:
    """Run `command`, start it again whenever it dies unasked; return its exit code on stop.

    Restarts back off (doubling from `restart_delay_s` up to `max_delay_s`) while the child
    keeps dying young, as it does when its model cannot load; a child that ran for
    `healthy_after_s` resets the delay.
    """
    child: subprocess.Popen[bytes] | None = None
    stopping = threading.Event()

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    delay_s = restart_delay_s
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)  # noqa: S603 (our own worker command)
        code = child.wait()
        if stopping.is_set():
            return code
        if time.monotonic() - started >= healthy_after_s:
            delay_s = restart_delay_s
        log.warning("worker_died", exit_code=code, restarting_in_s=delay_s)
        # A stop asked for during the back-off ends it at once, and no worker is started.
        if stopping.wait(delay_s):
            return code
        delay_s = min(max_delay_s, delay_s * 2)
