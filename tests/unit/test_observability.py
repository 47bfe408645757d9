"""The parts of observability that need no stack: the log format, request ids, token timing,
webhook outcome labels, and forgetting the live gauges of dead processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import torch
from prometheus_client.mmap_dict import MmapedDict

from services.core import logs
from services.core.config import Settings
from services.core.metrics import forget_dead_processes
from services.core.tables import DeliveryStatus
from services.core.webhooks.delivery import AttemptResult, outcome_label
from workers.backends.streaming import TokenClock

END = 0


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    """Give the root logger and structlog back as they were after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def log_once(log_format: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Configure `log_format`, write one vlmq line and one standard-library line."""
    settings = Settings(_env_file=None, log_format=log_format)  # type: ignore[call-arg]
    logs.configure_logging(settings)
    with logs.bound(request_id="req_1", job_id=None):
        structlog.get_logger("vlmq.test").warning("job_done", outcome="succeeded", tokens=3)
    logging.getLogger("celery.test").warning("Task %s received", "t1")
    return capsys.readouterr().err.splitlines()


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_are_key_value_pairs_without_colour(capsys: pytest.CaptureFixture[str]) -> None:
    ours, library = log_once("text", capsys)
    assert ours.startswith("timestamp=") and "level=warning" in ours
    assert "event=job_done" in ours and "outcome=succeeded tokens=3 request_id=req_1" in ours
    assert "job_id" not in ours  # None values are not bound
    assert 'event="Task t1 received"' in library and "logger=celery.test" in library
    assert "\x1b[" not in ours + library


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_one_object_each(capsys: pytest.CaptureFixture[str]) -> None:
    ours, library = (json.loads(line) for line in log_once("json", capsys))
    assert ours["event"] == "job_done" and ours["request_id"] == "req_1"
    assert ours["level"] == "warning" and ours["logger"] == "vlmq.test"
    assert library["event"] == "Task t1 received" and library["logger"] == "celery.test"


def test_long_values_are_cut_but_tracebacks_kept() -> None:
    long = "x" * (logs.MAX_VALUE_CHARS + 500)
    event = logs.cut_long_values(None, "info", {"body": long, "exception": long})
    assert event["body"].startswith("x" * logs.MAX_VALUE_CHARS) and "(+500 chars)" in event["body"]
    assert event["exception"] == long


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("trace-42", True),
        ("0af7651916cd43dd8448eb211c80319c", True),
        ("has space", False),
        ("x" * 129, False),
        ("", False),
        (None, False),
        ("line\nbreak", False),
    ],
)
def test_a_client_request_id_is_kept_only_when_sane(sent: str | None, kept: bool) -> None:
    accepted = logs.accepted_request_id(sent)
    assert (accepted == sent) is kept
    if not kept:
        assert accepted.startswith("req_") and len(accepted) == 28


def test_token_clock_times_each_row_until_its_end_token() -> None:
    clock = TokenClock(rows=2, end_token_ids={END})
    clock.put(torch.tensor([[5, 6, 7], [5, 6, 7]]))  # the prompt
    assert clock.timing(0) is None
    clock.put(torch.tensor([11, 21]))
    clock.put(torch.tensor([12, END]))  # row 1 ends after one token
    clock.put(torch.tensor([13, 0]))  # padding after the end is not a token
    clock.end()
    first, second = clock.timing(0), clock.timing(1)
    assert first is not None and second is not None
    assert first.first_token_s == second.first_token_s >= 0
    assert first.decode_s > 0 and second.decode_s == 0


def test_token_clock_passes_every_call_on_to_the_text_streamer() -> None:
    seen: list[str] = []

    class RecordingStreamer:
        def put(self, value: torch.Tensor) -> None:
            seen.append(f"put{value.tolist()}")

        def end(self) -> None:
            seen.append("end")

    clock = TokenClock(rows=1, end_token_ids={END}, inner=RecordingStreamer())  # type: ignore[arg-type]
    clock.put(torch.tensor([[1, 2]]))
    clock.put(torch.tensor([3]))
    clock.end()
    assert seen == ["put[[1, 2]]", "put[3]", "end"]


@pytest.mark.parametrize(
    ("result", "status", "label"),
    [
        (AttemptResult(200, None, 5.0), DeliveryStatus.DELIVERED, "delivered"),
        (AttemptResult(503, None, 5.0), DeliveryStatus.PENDING, "retrying"),
        (AttemptResult(None, "timeout", 5.0), DeliveryStatus.FAILED, "failed"),
        (AttemptResult(410, None, 5.0), DeliveryStatus.GONE, "gone"),
        (AttemptResult(None, "refused: a private address", 0.1), DeliveryStatus.FAILED, "refused"),
    ],
)
def test_webhook_outcome_labels(result: AttemptResult, status: str, label: str) -> None:
    assert outcome_label(result, status) == label


def test_live_gauges_of_dead_processes_are_forgotten_and_totals_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    files = {
        "dead_gauge": tmp_path / f"gauge_livesum_{dead_pid}.db",
        "live_gauge": tmp_path / f"gauge_livesum_{os.getpid()}.db",
        "dead_counter": tmp_path / f"counter_{dead_pid}.db",
    }
    for path in files.values():
        values = MmapedDict(str(path))
        values.write_value("sample", 1.0, 0.0)
        values.close()
    forget_dead_processes(tmp_path)
    assert not files["dead_gauge"].exists()
    assert files["live_gauge"].exists() and files["dead_counter"].exists()
