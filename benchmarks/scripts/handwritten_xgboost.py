"""The hand-written Ray Data job for XGBoost, written the way the seed document writes it.

``read_parquet``, ``map_batches`` with a predictor class (booster loaded once per actor in
``__init__``), pandas batches, ``ActorPoolStrategy(size=2)``, ``write_parquet``. The predictor
builds a ``DMatrix`` per batch and calls ``predict``, as the seed does, and keeps the input
columns beside the predictions (as bulkinfer and the plain loop do). One change from the seed,
as in the embedding job: ``num_cpus=0.5`` per actor, without which Ray Data 2.60's Parquet reader
waits forever for a CPU on a 2-CPU machine. Prints one ``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
import ray
import xgboost


class XGBoostPredictor:
    def __init__(self, model_path: str):
        self.model = xgboost.Booster()
        self.model.load_model(model_path)

    def __call__(self, data: pd.DataFrame) -> pd.DataFrame:
        features = data[self.model.feature_names]
        data["predictions"] = self.model.predict(xgboost.DMatrix(features))
        return data


def main() -> None:
    source, output, model_path = sys.argv[1], sys.argv[2], sys.argv[3]
    store = int(sys.argv[4]) if len(sys.argv) > 4 else None  # the memory benchmark's limit
    ray.init(object_store_memory=store)
    job_start = time.time()
    test_dataset = ray.data.read_parquet(source)
    predictions = test_dataset.map_batches(
        XGBoostPredictor,
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_format="pandas",
        fn_constructor_kwargs={"model_path": model_path},
        num_cpus=0.5,
    )
    predictions.write_parquet(output)
    print("BENCH " + json.dumps({"job_s": time.time() - job_start}), flush=True)


if __name__ == "__main__":
    main()
