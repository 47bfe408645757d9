"""The default log format of real worker processes writing to a file: `key=value` lines in
one format, Celery's own lines included (the background worker's), and no colour codes."""

from __future__ import annotations

import re

from services.core.config import Settings
from tests.support import WorkerProcess, wait_until
from tests.webhook_receiver import BackgroundWorkerProcess

LINE = re.compile(r"^timestamp=\S+ level=\w+ logger=\S+ event=")


def test_piped_worker_logs_are_key_value_lines_without_colour(
    settings: Settings, worker: WorkerProcess, background_worker: BackgroundWorkerProcess
) -> None:
    assert settings.log_format == "text"
    for process in (worker, background_worker):
        # The heartbeat that made the fixture ready can come before the ready line.
        wait_until(lambda p=process: "event=worker_ready" in p.log_path.read_text(), 30, "ready")
        lines = [line for line in process.log_path.read_text().splitlines() if line.strip()]
        assert "\x1b[" not in "\n".join(lines)
        strays = [line for line in lines if not LINE.match(line)]
        assert not strays, f"{process.log_path.name}: lines in another format: {strays[:5]}"
        ready = next(line for line in lines if "event=worker_ready" in line)
        if process is worker:
            # The model worker takes its work from the fair queue: no Celery in it.
            assert "logger=workers.consumer" in ready
            assert not any("logger=celery." in line for line in lines)
        else:
            assert any("logger=celery." in line for line in lines)
            assert f"task_events={str(settings.celery_task_events).lower()}" in ready
