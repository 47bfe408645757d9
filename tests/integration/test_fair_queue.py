"""The fair queue's decisions, on a real Redis: token-fair order across tenants, weights,
strict bands with a kept share for batch lines, and its bookkeeping (held marks, removal,
positions, units)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from services.core.bands import Band
from services.core.fair_queue import FairQueue, Picked, QueuedWork, Settlement, set_weights
from tests.conftest import REDIS_URL

# A Redis database no stack of the suite uses.
FAIR_QUEUE_DB = 9


@pytest.fixture()
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(f"{REDIS_URL}/{FAIR_QUEUE_DB}")
    yield connection
    connection.close()


@pytest.fixture()
def fair(client: redis.Redis) -> Iterator[FairQueue]:
    queue = f"test-{secrets.token_hex(4)}"
    yield FairQueue(client, queue)
    for key in client.scan_iter(f"vlmq:fq:{queue}:*"):
        client.delete(key)
    set_weights(client, {})


def work(tenant: str, count: int, cost: int, band: Band = Band.DEFAULT) -> list[QueuedWork]:
    return [
        QueuedWork(f"{tenant}-{band.label}-{n}-{secrets.token_hex(2)}", tenant, band, cost)
        for n in range(count)
    ]


def take(fair: FairQueue, *, allow_batch: bool = True, chunk: int = 4) -> Picked | None:
    return fair.pick(allow_batch=allow_batch, chunk=chunk, batch_share=0.15, hold_s=20)


def serve(fair: FairQueue, picks: int) -> Counter[str]:
    """Pick `picks` units, settle each at its charge; tokens served per tenant."""
    served: Counter[str] = Counter()
    for _ in range(picks):
        picked = take(fair)
        assert picked is not None
        cost = sum(picked.costs.values())
        served[picked.tenant_id] += cost
        fair.settle([Settlement(picked.band, picked.tenant_id, cost, cost)])
    return served


def test_a_quiet_tenant_goes_next_however_long_the_backlog(fair: FairQueue) -> None:
    fair.push(work("flood", 1000, 50))
    serve(fair, 10)
    fair.push(work("quiet", 1, 5))
    picked = take(fair)
    assert picked is not None and picked.tenant_id == "quiet"


def test_tenants_get_equal_tokens_whatever_their_answer_lengths(fair: FairQueue) -> None:
    fair.push(work("short", 2000, 10))
    fair.push(work("long", 200, 160))
    served = serve(fair, 600)
    assert 1 / 1.1 < served["short"] / served["long"] < 1.1


def test_a_charge_is_corrected_to_what_the_job_really_cost(fair: FairQueue) -> None:
    # Both ask for 100 tokens; "terse" really uses 10 each time: it gets more jobs run.
    fair.push(work("terse", 300, 100))
    fair.push(work("verbose", 300, 100))
    served: Counter[str] = Counter()
    for _ in range(200):
        picked = take(fair)
        assert picked is not None
        real = 10 if picked.tenant_id == "terse" else 100
        served[picked.tenant_id] += real
        fair.settle([Settlement(picked.band, picked.tenant_id, 100, real)])
    assert 1 / 1.2 < served["terse"] / served["verbose"] < 1.2


def test_weights_divide_the_service(fair: FairQueue, client: redis.Redis) -> None:
    set_weights(client, {"gold": 2.0})
    fair.push(work("gold", 500, 10))
    fair.push(work("plain", 500, 10))
    served = serve(fair, 300)
    assert 1.9 < served["gold"] / served["plain"] < 2.1


def test_an_idle_tenant_earns_no_credit(fair: FairQueue) -> None:
    fair.push(work("steady", 400, 10))
    fair.push(work("bursty", 1, 10))
    serve(fair, 100)  # bursty ran once, then was idle while steady was served 99 times
    fair.push(work("bursty", 100, 10))
    served = serve(fair, 40)
    # Back from idle, it shares equally from now on: it does not get the next 98 picks.
    assert served["bursty"] <= 250


def test_bands_are_strict_and_batch_lines_keep_their_share(fair: FairQueue) -> None:
    fair.push(work("a", 300, 10, Band.FLEX))
    fair.push(work("a", 300, 10, Band.DEFAULT))
    fair.push(work("b", 400, 10, Band.BATCH))
    fair.push(work("c", 1, 10, Band.PRIORITY))
    first = take(fair)
    assert first is not None and first.band == Band.PRIORITY
    by_band: Counter[Band] = Counter()
    for _ in range(100):
        picked = take(fair)
        assert picked is not None
        by_band[picked.band] += sum(picked.costs.values())
        fair.settle([Settlement(picked.band, picked.tenant_id, 10, 10)])
    assert by_band[Band.FLEX] == 0  # default work waits: flex is served only after it
    share = by_band[Band.BATCH] / (by_band[Band.BATCH] + by_band[Band.DEFAULT])
    assert 0.13 < share < 0.2


def test_batch_lines_go_in_chunks_of_one_tenant_and_a_lone_line_alone(fair: FairQueue) -> None:
    lines = work("b", 6, 10, Band.BATCH)
    lines[2] = QueuedWork(lines[2].job_id, "b", Band.BATCH, 10, alone=True)
    fair.push(lines)
    chunks = [take(fair, chunk=4) for _ in range(4)]
    assert [len(c.job_ids) for c in chunks if c is not None] == [2, 1, 3]
    assert chunks[3] is None
    assert take(fair, allow_batch=False) is None


def test_bookkeeping_held_marks_removal_positions_and_units(fair: FairQueue) -> None:
    first, second, third = work("a", 3, 10)
    other = work("b", 2, 10)
    fair.push([first, second, third, *other])
    fair.push([first])  # queued again: left where it is
    assert fair.units(chunk=4) == 5
    assert fair.position(first.job_id) == 0
    assert fair.position(third.job_id) == 2 + 2  # two of its own ahead, and b's two
    picked = take(fair)
    assert picked is not None and picked.job_ids == [first.job_id]
    # Taken and not claimed yet: held, so not missing; once the mark goes, missing.
    assert fair.missing([first.job_id, second.job_id]) == []
    fair.drop_held([first.job_id])
    assert fair.missing([first.job_id, second.job_id]) == [first.job_id]
    assert fair.position(first.job_id) is None
    assert fair.remove(second.job_id) and not fair.remove(second.job_id)
    assert fair.queued_tokens_of("a") == 10
    assert fair.load().queued_tokens == 30
    assert fair.load().backlogged_tenants == 2
    assert fair.tenant_tokens() == {"a": 10, "b": 20}
