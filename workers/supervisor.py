"""Keep a worker process alive: a job that kills its worker (out of memory, a crash in
native code) must not take the worker away for good. The supervisor loads nothing itself;
each worker it starts is a fresh process that loads the model once."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from types import FrameType

log = logging.getLogger(__name__)


def supervise(command: list[str], restart_delay_s: float = 1.0) -> int:
    """Run `command`, start it again whenever it dies unasked; return its exit code on stop."""
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        child = subprocess.Popen(command)  # noqa: S603 (our own worker command)
        code = child.wait()
        if stopping:
            return code
        log.warning("event=worker_died exit_code=%s restarting_in_s=%s", code, restart_delay_s)
        time.sleep(restart_delay_s)
