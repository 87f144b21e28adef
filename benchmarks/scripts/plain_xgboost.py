"""The plain XGBoost script: read Parquet with pandas, ``inplace_predict``, write Parquet.

One process, all cores (XGBoost's default threads). Prints one ``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    source, output, model_path = sys.argv[1], sys.argv[2], sys.argv[3]
    import pandas as pd
    import xgboost

    job_start = time.time()
    data = pd.read_parquet(source)
    booster = xgboost.Booster()
    booster.load_model(model_path)
    began = time.perf_counter()
    data["predictions"] = booster.inplace_predict(data[booster.feature_names])
    model_s = time.perf_counter() - began
    os.makedirs(output, exist_ok=True)
    data.to_parquet(f"{output}/0.parquet", index=False)
    done = time.time()
    print(
        "BENCH "
        + json.dumps({"job_s": done - job_start, "model_s": model_s, "first_row_at": done}),
        flush=True,
    )


if __name__ == "__main__":
    main()
