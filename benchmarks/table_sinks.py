"""Job time of the table sinks against the Parquet sink on the same input (one local Ray).

Run from the repository root::

    python benchmarks/table_sinks.py                  # 200,000 rows, 2 work units, 3 rounds

Input: Parquet files of ``id`` (int64), ``text`` (about 40 characters), ``score`` (float32) and
``vec`` (32 float32s), in two work units; no map stage, so the figures are what reading and
writing cost. Each round runs every sink once into a fresh output, in a rotating order; the
median ``job_s`` of each (``RunResult.job_s``: from the first read to the publish) is printed,
with rows/s and the ratio to Parquet. SQLite stores the vector as JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_input(folder: Path, rows: int, files: int = 2, dim: int = 32) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = rows // files
    for f in range(files):
        ids = np.arange(f * per, (f + 1) * per)
        vec = rng.random((per, dim), dtype=np.float32)
        table = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "text": [f"sentence number {i} with a few more words" for i in ids],
                "score": pa.array(rng.random(per, dtype=np.float32)),
                "vec": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim),
            }
        )
        pq.write_table(table, folder / f"{f}.parquet")


def sinks(out: Path, n: int) -> dict[str, dict]:
    return {
        "parquet": {"type": "parquet", "params": {"path": str(out / f"p{n}")}},
        "lance": {"type": "lance", "params": {"path": str(out / f"l{n}.lance")}},
        "iceberg": {
            "type": "iceberg",
            "params": {
                "catalog": {
                    "type": "sql",
                    "uri": f"sqlite:///{out}/c{n}.db",
                    "warehouse": f"file://{out}/wh{n}",
                },
                "table": "bench.items",
            },
        },
        "sqlite": {
            "type": "sql",
            "params": {
                "url": f"sqlite:///{out}/s{n}.db",
                "table": "items",
                "json_columns": ["vec"],
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    from pipeline.execute.runner import run_job

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        write_input(inp, args.rows)
        names = list(sinks(Path(tmp), 0))
        times: dict[str, list[float]] = {name: [] for name in names}
        for n in range(args.rounds):
            order = names[n % len(names) :] + names[: n % len(names)]
            for name in order:
                config = {
                    "source": {"type": "parquet", "params": {"path": str(inp)}},
                    "sink": sinks(Path(tmp), n)[name],
                    "run": {"progress": False, "unit_bytes": 1},
                }
                result = run_job(config)
                assert result.rows_out == args.rows, (name, result.rows_out)
                times[name].append(result.job_s)
        base = statistics.median(times["parquet"])
        load = os.getloadavg()[0]
        print(f"{args.rows:,} rows, 2 work units, {args.rounds} rounds, load {load:.1f}")
        for name in names:
            t = statistics.median(times[name])
            print(
                f"{name:8s} job {t:6.2f} s  {args.rows / t:>9,.0f} rows/s  {t / base:4.2f}x parquet"
                f"  (runs: {', '.join(f'{x:.2f}' for x in times[name])})"
            )
    ray.shutdown()


if __name__ == "__main__":
    main()
