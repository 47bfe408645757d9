"""The worker supervisor: restarts with back-off, and stops at once when asked to."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import sys
from services.core.config import Settings
from services.core.logs import configure_logging
from workers.supervisor import supervise
configure_logging(Settings())
sys.exit(supervise([sys.executable, "-c", "import sys; sys.exit(3)"], restart_delay_s=0.2))
"""


def test_restarts_back_off_and_a_stop_during_the_back_off_ends_it(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdout=output, stderr=subprocess.STDOUT
        )
        time.sleep(3)  # children die at once: delays 0.2, 0.4, 0.8, 1.6 ...
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert process.wait(timeout=10) == 3
    assert time.monotonic() - stopped_at < 1.5
    delays = [
        float(line.rsplit("=", 1)[1])
        for line in log.read_text().splitlines()
        if "event=worker_died" in line
    ]
    assert len(delays) >= 3 and delays[:3] == [0.2, 0.4, 0.8]
