"""What a finished batch's bookkeeping costs: a progress check's counts, and the output file.

Builds a SQLite database by the migrations with one moderation batch of `--lines` succeeded
lines (rows shaped as a run writes them), then times in-process, median of `--rounds`:

- `job_counts` (what every progress check reads) with the `(batch_id, status)` index, and
  again with that index dropped (the lines' rows read for their status);
- `write_result_file` (the output file, written when the batch finalizes) loading the
  columns of a result line, and again loading every column (as it did before).

    .venv/bin/python -m bench.batch_tail [--lines 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute

from services.core.batches.expand import MODERATIONS
from services.core.batches.finalize import job_counts
from services.core.batches.results import write_result_file
from services.core.db import create_db_engine, create_session_factory, utcnow
from services.core.ids import new_id
from services.core.migrate import upgrade
from services.core.responses.batches import BatchResultLine
from services.core.submit import insert_job_values
from services.core.tables import Batch, File, Job, Tenant


def cpu_ms(work: Callable[[], object], rounds: int) -> float:
    """The median CPU milliseconds of `work` over `rounds` runs."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def build_batch(sessions: sa.orm.sessionmaker[sa.orm.Session], lines: int) -> Batch:
    """A tenant, an input file and a moderation batch of `lines` succeeded lines."""
    now = utcnow()
    with sessions.begin() as session:
        tenant = Tenant(id=new_id("tenant"), name="bench")
        session.add(tenant)
        session.flush()
        file = File(id=new_id("file"), tenant_id=tenant.id, purpose="batch", filename="in")
        batch = Batch(
            id=new_id("batch"),
            tenant_id=tenant.id,
            endpoint=MODERATIONS,
            input_file_id=file.id,
            completion_window="24h",
            status="in_progress",
            metadata_={},
            created_at=now,
        )
        session.add_all([file, batch])
        session.flush()
        rows = [
            dict(
                id=new_id("job"),
                tenant_id=tenant.id,
                kind="moderation",
                model="easyvqa-glm4v",
                messages=[{"role": "user", "content": [{"type": "image", "sha256": "0" * 64}]}],
                params={"max_tokens": 1, "temperature": 0.0, "score_policy": "0" * 64},
                status="succeeded",
                output="",
                result={"scores": {"triangle": 0.999997}, "usage": {"prompt_tokens": 0}},
                metrics={"queue_ms": 92.2, "inference_ms": 270.8, "batch_size": 32},
                metadata_={},
                moderation={"thresholds": {"triangle": 0.5}, "input_types": ["image"]},
                batch_id=batch.id,
                custom_id=f"line-{n}",
                attempts=1,
                created_at=now,
                completed_at=now,
            )
            for n in range(lines)
        ]
        insert_job_values(session, rows)
        session.expunge(batch)
    return batch


def every_column(endpoint: str) -> tuple[InstrumentedAttribute[Any], ...]:
    """Every column of a job (what a result file loaded before it loaded only its lines')."""
    return tuple(getattr(Job, column.key) for column in sa.inspect(Job).column_attrs)


def main() -> None:
    """Build the batch, time its counts and its output file, print both beside the baselines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'vlmq.db'}"
        upgrade(url)
        engine = create_db_engine(url)
        sessions = create_session_factory(engine)
        batch = build_batch(sessions, args.lines)

        def counts() -> None:
            with sessions() as session:
                for _ in range(10):
                    job_counts(session, batch.id)

        def output_file() -> None:
            write_result_file(sessions, batch, ["succeeded"], "out.jsonl", None)

        indexed = cpu_ms(counts, args.rounds) / 10
        written = cpu_ms(output_file, args.rounds)
        columns = BatchResultLine.columns
        BatchResultLine.columns = staticmethod(every_column)  # type: ignore[method-assign]
        try:
            written_whole = cpu_ms(output_file, args.rounds)
        finally:
            BatchResultLine.columns = columns  # type: ignore[method-assign]
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_jobs_batch_status")
        unindexed = cpu_ms(counts, args.rounds) / 10
    print(f"a moderation batch of {args.lines} succeeded lines, SQLite, CPU ms (median)")
    print(f"  progress check's counts: {indexed:8.2f} (status index)  {unindexed:8.2f} (rows)")
    print(f"  output file written:     {written:8.1f} (its columns)  {written_whole:8.1f} (all)")


if __name__ == "__main__":
    main()
