"""Submitting a request's jobs as its caller: the routes' one way into the submit use case."""

from __future__ import annotations

from collections.abc import Callable

from flask import request
from sqlalchemy.orm import Session

from services.api.context import caller, runtime, tenant_id
from services.api.request_parsing import idempotency_key
from services.core.config import Settings
from services.core.job_spec import JobSpec
from services.core.moderation.service import screened, screening_policy
from services.core.outbound import fetching_for
from services.core.submit import Submitted, submit

# How a route turns its parsed body into jobs: (session, settings, tenant id) -> specs.
SpecsOf = Callable[[Session, Settings, str], list[JobSpec]]


def submit_as_caller(specs_of: SpecsOf, *, replay_finished_only: bool = False) -> Submitted:
    """The jobs `specs_of` makes of this request, submitted by its caller under its
    `Idempotency-Key` (the one submit use case, `services.core.submit`)."""
    rt = runtime()
    # Image fetches count against the caller's share of the fetch slots.
    with rt.sessions() as session, fetching_for(tenant_id()):
        specs = specs_of(session, rt.settings, tenant_id())
        if caller().screens_inputs:
            # The tenant's policy screens every job (the key's read said so: a tenant that
            # does not screen costs no extra statement).
            specs = screened(specs, screening_policy(session, tenant_id()))
    return submit(
        rt,
        caller(),
        request.path,
        specs,
        idempotency_key=idempotency_key(),
        replay_finished_only=replay_finished_only,
    )
