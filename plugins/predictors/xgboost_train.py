"""Train the seed's XGBoost model with Ray Train and keep its checkpoint for batch prediction.

The seed trains ``XGBoostTrainer(label_column="target", ...)`` on the breast-cancer data; that
form is gone from Ray 2.5x. This is the same flow with the current API: a per-worker training
function that calls ``xgboost.train`` with ``RayTrainReportCallback``, whose checkpoint the
``xgboost`` predictor loads with ``RayTrainReportCallback.get_model``::

    python -m plugins.predictors.xgboost_train --out models/breast_cancer
    python -m pipeline +experiment=xgboost_checkpoint

``--out`` receives ``checkpoint/`` (the Ray Train checkpoint folder) and ``valid.csv`` (the
held-out 30%, features and ``target``, to predict on). The data is scikit-learn's bundled copy of
the seed's breast-cancer CSV, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

LABEL = "target"


def breast_cancer_frames(test_size: float = 0.3, seed: int = 0):
    """The breast-cancer data as (train, valid) DataFrames: 30 features and ``target``."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    frame = load_breast_cancer(as_frame=True).frame
    return train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame[LABEL])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker: its shard of the data -> ``xgboost.train``."""
    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    train = ray.train.get_dataset_shard("train").materialize().to_pandas()
    valid = ray.train.get_dataset_shard("valid").materialize().to_pandas()
    dtrain = xgboost.DMatrix(train.drop(columns=[LABEL]), label=train[LABEL])
    dvalid = xgboost.DMatrix(valid.drop(columns=[LABEL]), label=valid[LABEL])
    xgboost.train(
        config["params"],
        dtrain=dtrain,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        num_boost_round=config["num_boost_round"],
        callbacks=[RayTrainReportCallback()],
        verbose_eval=False,
    )


def train(out: str | Path, *, num_workers: int = 2, num_boost_round: int = 20) -> Path:
    """Train with Ray Train; write ``out/checkpoint`` and ``out/valid.csv``.

    Uses the Ray instance this process is connected to, or starts a local one. ``out`` must not
    exist; it appears only when training succeeded.
    """
    import ray
    import ray.data
    import ray.train
    from ray.train.xgboost import XGBoostTrainer

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out or remove it")
    if not ray.is_initialized():
        # The workers' own lines (a report per round, Ray Train's controller and placement
        # group clean-up at exit) stay in the session's logs; a failed training raises here.
        ray.init(
            address="local", include_dashboard=False, logging_level="WARNING", log_to_driver=False
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    train_df, valid_df = breast_cancer_frames()
    # Leave CPUs free for Ray Data's ingest tasks: workers that hold every CPU wait forever.
    cpus = ray.cluster_resources().get("CPU", 1.0)
    per_worker = max(0.25, min(1.0, (cpus - 1) / num_workers))
    with tempfile.TemporaryDirectory(prefix="bulkinfer-train-") as storage:
        trainer = XGBoostTrainer(
            train_loop_per_worker,
            train_loop_config={
                "params": {
                    "objective": "binary:logistic",
                    "eval_metric": ["logloss", "error"],
                    "tree_method": "hist",
                    "nthread": 1,
                },
                "num_boost_round": num_boost_round,
            },
            datasets={
                "train": ray.data.from_pandas(train_df),
                "valid": ray.data.from_pandas(valid_df),
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=num_workers, use_gpu=False, resources_per_worker={"CPU": per_worker}
            ),
            run_config=ray.train.RunConfig(name="breast_cancer", storage_path=storage),
        )
        result = trainer.fit()
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent or "."))
        try:
            result.checkpoint.to_directory(str(staging / "checkpoint"))
            valid_df.to_csv(staging / "valid.csv", index=False)
            os.replace(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    metrics = {k: round(v, 4) for k, v in (result.metrics or {}).items() if "valid" in k}
    print(f"trained {num_boost_round} rounds on {num_workers} worker(s); {metrics}")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m plugins.predictors.xgboost_train --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m plugins.predictors.xgboost_train",
        description="Train the seed's XGBoost model on the breast-cancer data with Ray Train.",
    )
    parser.add_argument("--out", required=True, help="new folder for checkpoint/ and valid.csv")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    parser.add_argument("--rounds", type=int, default=20, help="boosting rounds (default 20)")
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path = train(args.out, num_workers=args.workers, num_boost_round=args.rounds)
    print(f"checkpoint: {path / 'checkpoint'}\nvalidation data: {path / 'valid.csv'}")


if __name__ == "__main__":
    main()
