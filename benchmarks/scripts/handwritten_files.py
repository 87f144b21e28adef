"""Ray Data alone on the files workload: a folder of Parquet files read and written as Parquet
with nothing between, in as many read tasks as there are files (``per-file``) or as Ray Data
chooses (``default``); the driver's peak resident memory is the figure.

The read uses Ray Data's first Parquet reader, as bulkinfer does: Ray Data 2.60's second one
lists a list of files through fsspec's HTTP filesystem check, which fails without ``aiohttp``
(not installed here).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import pyarrow.fs
import ray


def main() -> None:
    folder, output, blocks = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    ray.init()
    context = ray.data.DataContext.get_current()
    context.use_datasource_v2 = False
    job_start = time.time()
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    local = pyarrow.fs.LocalFileSystem()
    tasks = len(files) if blocks == "per-file" else None
    ray.data.read_parquet(files, filesystem=local, override_num_blocks=tasks).write_parquet(
        output, filesystem=local
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(
        "BENCH " + json.dumps({"job_s": time.time() - job_start, "driver_peak_rss_bytes": peak}),
        flush=True,
    )


if __name__ == "__main__":
    main()
