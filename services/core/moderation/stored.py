"""Moderation policies as jobs store them: the questions once per content hash (a
`ScorePolicy` row), named by every job that scores them. A request or batch line that
fans out to many jobs then stores its policy once, not once per job."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.core.db import utcnow
from services.core.inputs.prompts import GenerationParams
from services.core.tables import ScorePolicy

# Policies kept in each worker process (they never change: a hash names one content).
CACHED_POLICIES = 256


def policy_hash(questions: dict[str, str]) -> str:
    """The content hash of a policy's questions (their order is part of it)."""
    encoded = json.dumps(list(questions.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def stored_params(params: GenerationParams) -> dict[str, Any]:
    """The job row's form of `params`: a moderation job's questions, and a screened job's,
    replaced by their hash."""
    changes: dict[str, Any] = {}
    if params.score_questions:
        changes.update(score_questions=None, score_policy=policy_hash(params.score_questions))
    if params.screen_questions:
        changes.update(screen_questions=None, screen_policy=policy_hash(params.screen_questions))
    return params.model_copy(update=changes).model_dump(mode="json")


def store_policies(session: Session, params: Iterable[GenerationParams]) -> None:
    """Store the policies these jobs score (once per hash), marking each as used now."""
    rows = {
        policy_hash(questions): questions
        for item in params
        for questions in (item.score_questions, item.screen_questions)
        if questions
    }
    if not rows:
        return
    now = utcnow()
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(ScorePolicy)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["sha256"], set_={"used_at": statement.excluded.used_at}
        ),
        [
            {"sha256": sha, "questions": questions, "used_at": now}
            for sha, questions in rows.items()
        ],
    )


class PolicyCache:
    """The policies a worker process has read, by hash (a hash names one content for ever)."""

    def __init__(self, size: int = CACHED_POLICIES) -> None:
        self.size = size
        self.policies: dict[str, dict[str, str]] = {}
        self.lock = threading.Lock()

    def read(self, session: Session, hashes: Iterable[str]) -> dict[str, dict[str, str]]:
        """The questions of each of these policies (reading the ones not cached yet); a
        policy no longer stored is absent."""
        wanted = set(hashes)
        with self.lock:
            found = {sha: self.policies[sha] for sha in wanted if sha in self.policies}
        missing = wanted - found.keys()
        if missing:
            rows = session.execute(
                sa.select(ScorePolicy.sha256, ScorePolicy.questions).where(
                    ScorePolicy.sha256.in_(sorted(missing))
                )
            )
            read = {sha: dict(questions) for sha, questions in rows}
            found.update(read)
            with self.lock:
                if len(self.policies) + len(read) > self.size:
                    self.policies.clear()
                self.policies.update(read)
        return found


def job_params(stored: dict[str, Any], policies: dict[str, dict[str, str]]) -> GenerationParams:
    """A job's generation parameters as the model needs them: the questions of the policy
    it names put back (KeyError when that policy is not stored)."""
    params = GenerationParams.model_validate(stored)
    changes: dict[str, Any] = {}
    if params.score_policy is not None:
        changes.update(score_questions=policies[params.score_policy], score_policy=None)
    if params.screen_policy is not None:
        changes.update(screen_questions=policies[params.screen_policy], screen_policy=None)
    return params.model_copy(update=changes) if changes else params
