"""Rows per second of the SQL target's batched staging insert, and of its publishing transaction.

Run from the repository root (no Ray; one process, as one write task)::

    python benchmarks/staged_sql_insert.py                 # 100,000 rows into SQLite
    python benchmarks/staged_sql_insert.py --rows 20000 --url postgresql+psycopg://u@h/db \
        --password-env PGPASSWORD

Two column sets: ``scalars`` (id int64, text of ~40 characters, score float32, flag bool, a
timestamp) and ``vectors`` (id and a 32-float vector stored as JSON on SQLite, as a real[] on
PostgreSQL). Each is written into a fresh table and timed three times; the median (and the
range) is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.sinks.targets.protocol import receipt  # noqa: E402
from plugins.sinks.targets.sql_target import SqlParams, SqlTarget  # noqa: E402


def scalars(n: int) -> pa.Table:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "text": [f"sentence number {i} with a few more words" for i in range(n)],
            "score": pa.array(np.random.default_rng(0).random(n, dtype=np.float32)),
            "flag": pa.array(np.arange(n) % 2 == 0),
            "at": pa.array([t0] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def vectors(n: int, dim: int = 32) -> pa.Table:
    values = np.random.default_rng(0).random((n, dim), dtype=np.float32)
    return pa.table(
        {
            "id": pa.array(np.arange(n), pa.int64()),
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), dim),
        }
    )


def measure(url: str, password_env: str | None, table: pa.Table, name: str, batch: int) -> None:
    inserts, publishes = [], []
    as_json = ["vec"] if url.startswith("sqlite") and "vec" in table.column_names else []
    for attempt in range(3):
        params = SqlParams(
            url=url,
            password_env=password_env,
            table=f"bench_{name}_{attempt}",
            mode="replace",
            json_columns=as_json,
            batch_rows=batch,
        )
        target = SqlTarget(params)
        state = target.begin(f"bench-{attempt}", table.schema)
        writer = target.writer(state, "u0")
        start = time.perf_counter()
        parts = writer.write([table])
        inserted = time.perf_counter()
        target.publish(state, [receipt("u0", parts)])
        published = time.perf_counter()
        inserts.append(inserted - start)
        publishes.append(published - inserted)
    n = table.num_rows
    insert, publish = statistics.median(inserts), statistics.median(publishes)
    print(
        f"{name:8s} {n:>8,} rows  staging insert {insert:6.2f} s ({n / insert:>9,.0f} rows/s; "
        f"{n / max(inserts):,.0f}-{n / min(inserts):,.0f})  publish {publish:5.2f} s "
        f"({n / publish:>10,.0f} rows/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000, help="rows per INSERT batch")
    parser.add_argument("--url", help="SQLAlchemy URL (default: a SQLite file in a temp folder)")
    parser.add_argument("--password-env", help="variable holding the password")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{os.path.join(tmp, 'bench.db')}"
        for name, table in (("scalars", scalars(args.rows)), ("vectors", vectors(args.rows))):
            measure(url, args.password_env, table, name, args.batch)


if __name__ == "__main__":
    main()
