"""Start-up baseline: a bare ``ray.init()`` plus one ``map_batches`` over 10 rows, then write."""

from __future__ import annotations

import json
import sys
import time

import ray


def main() -> None:
    output = sys.argv[1]
    ray.init()
    job_start = time.time()
    ds = ray.data.from_items([{"data": i} for i in range(10)])
    ds.map_batches(lambda batch: batch).write_parquet(output)
    print("BENCH " + json.dumps({"job_s": time.time() - job_start}), flush=True)


if __name__ == "__main__":
    main()
