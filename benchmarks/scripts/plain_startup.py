"""Start-up floor without Ray: the same 10 rows written to Parquet by one Python process."""

from __future__ import annotations

import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq


def main() -> None:
    output = sys.argv[1]
    job_start = time.time()
    os.makedirs(output, exist_ok=True)
    pq.write_table(pa.table({"data": list(range(10))}), f"{output}/0.parquet")
    done = time.time()
    print("BENCH " + json.dumps({"job_s": done - job_start, "first_row_at": done}), flush=True)


if __name__ == "__main__":
    main()
