"""The newcomer watch of a saturated worker looks for a newcomer's job as soon as one is
announced, and at most once per gap however many announcements follow."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from tests.support import wait_until
from workers import dispatch
from workers.doorbell import Doorbell
from workers.state import InFlight

# The doorbell is rung by hand; its client never connects.
UNCONNECTED = redis.Redis(host="127.0.0.1", port=1)
GAP_S = 30.0


def test_an_announced_newcomer_is_looked_for_at_once_then_not_again_within_the_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looks: list[float] = []

    def pick_recording_looks(*_args: Any, **_kwargs: Any) -> None:
        looks.append(time.monotonic())  # nothing waits: the look finds no job

    monkeypatch.setattr(dispatch, "pick", pick_recording_looks)
    # Only what the watch reads of a worker's state: its task threads, all busy.
    fake_state: Any = SimpleNamespace(in_flight=InFlight(), wait_ready=lambda: None)
    doorbell = Doorbell(UNCONNECTED, "arrivals")
    dispatch.NewcomerWatch(
        fake_state, doorbell, threads=1, spare=1, fallback_s=GAP_S, min_gap_s=GAP_S
    ).start()
    fake_state.in_flight.saturated.set()
    time.sleep(0.2)  # the watch waits for an announcement

    announced = time.monotonic()
    doorbell.ring(1, interactive=True)
    wait_until(lambda: looks, 5, "a look right after the announcement")
    assert looks[0] - announced < 1.0

    for _ in range(5):
        doorbell.ring(1, interactive=True)
    time.sleep(0.5)
    assert len(looks) == 1
