"""The supervisor: restarts with back-off, one child at a time, and stops at once when asked."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import wait_until
from vlmq.supervisor import Supervisor

SCRIPT = """
import subprocess, sys
from services.core.config import Settings
from services.core.logs import configure_logging
from vlmq.supervisor import supervise
configure_logging(Settings())
start = lambda: subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
sys.exit(supervise("worker", start, restart_delay_s=0.2))
"""


def test_restarts_back_off_and_a_stop_during_the_back_off_ends_it(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdout=output, stderr=subprocess.STDOUT
        )
        # Children die at once: delays 0.2, 0.4, 0.8, then 1.6, during which it is stopped.
        wait_until(lambda: len(deaths(log)) >= 4, 30, "four restarts")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 3
    died = [line for line in log.read_text().splitlines() if "event=child_died" in line]
    assert all("name=worker exit_code=3" in line for line in died)
    delays = [float(re.findall(r"restarting_in_s=([\d.]+)", line)[0]) for line in died]
    assert len(delays) >= 3 and delays[:3] == [0.2, 0.4, 0.8]


def deaths(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "event=child_died" in line]


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_only_the_child_that_died_is_restarted_and_stop_ends_them_all() -> None:
    supervisor = Supervisor(restart_delay_s=0.05)
    steady = supervisor.add("steady", sleeper)
    doomed = supervisor.add("doomed", sleeper)
    steady_pid, doomed_pid = steady.process.pid, doomed.process.pid
    try:
        doomed.process.kill()
        wait_until(lambda: doomed.process.pid != doomed_pid, 10, "a restart", interval_s=0.02)
        assert doomed.process.pid != doomed_pid and doomed.process.poll() is None
        assert steady.process.pid == steady_pid and steady.process.poll() is None
    finally:
        supervisor.stop(timeout_s=5)
    assert steady.process.returncode == -signal.SIGTERM
    assert doomed.process.returncode == -signal.SIGTERM
