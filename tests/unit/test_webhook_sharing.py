"""Webhook delivery shared between tenants in one background worker: a per-tenant cap on
attempts in progress, and a breaker that pauses an endpoint failing again and again."""

from __future__ import annotations

from services.core.webhooks.sharing import DeliverySharing


def test_a_tenant_has_at_most_its_cap_of_attempts_in_progress() -> None:
    sharing = DeliverySharing(breaker_failures=0)
    with sharing.attempt("busy", "a:1", 2) as first, sharing.attempt("busy", "a:1", 2) as second:
        assert (first, second) == (0.0, 0.0)
        with sharing.attempt("busy", "b:1", 2) as third:
            assert third > 0  # no room: try again later, holding nothing
        with sharing.attempt("other", "a:1", 2) as others:
            assert others == 0.0
    with sharing.attempt("busy", "a:1", 2) as again:
        assert again == 0.0
    assert not sharing.running


def test_an_endpoint_failing_again_and_again_is_paused_then_probed() -> None:
    sharing = DeliverySharing(breaker_failures=3, breaker_pause_s=60.0)
    for _ in range(3):
        with sharing.attempt("t", "down:80", 8) as wait_s:
            assert wait_s == 0.0
        sharing.record("down:80", failed=True)
    assert sharing.paused_hosts() == ["down:80"]
    with sharing.attempt("t", "down:80", 8) as wait_s:
        assert 59 < wait_s <= 60  # paused: the attempt waits, unmade
    with sharing.attempt("t", "up:80", 8) as wait_s:
        assert wait_s == 0.0  # other endpoints are not
    # Once the pause is over, one attempt probes the endpoint; a success closes the breaker.
    sharing.hosts["down:80"].paused_until = 0.0
    with sharing.attempt("t", "down:80", 8) as probe, sharing.attempt("u", "down:80", 8) as held:
        assert probe == 0.0 and held > 0
    sharing.record("down:80", failed=False)
    with sharing.attempt("u", "down:80", 8) as wait_s:
        assert wait_s == 0.0
    assert sharing.paused_hosts() == []
