"""Table sinks refuse at plan time (dry runs too) what a run would refuse only at its first
write: an existing Lance dataset, LanceDB table, Iceberg or SQL table whose columns the output
does not fit (names, types, vector lengths), and a SQL ``schema.table`` where the database has
no such schema. And they take jobs whose column types a model file tells, such as the seed's
XGBoost job, without ``sink.params.column_types``.

Every input is built here: datasets and tables written with the engines' own libraries, a
booster trained on scikit-learn's breast-cancer data.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.app.main import compose
from pipeline.plan.planner import plan_job


def table_sinks(where: Path) -> dict[str, list[str]]:
    """Overrides that point each table sink at a new table under ``where``."""
    return {
        "lance": ["sink=lance", f"sink.params.path={where}/scores.lance"],
        "iceberg": [
            "sink=iceberg",
            "+sink.params.catalog={type: sql, uri: 'sqlite:///"
            f"{where}/catalog.db', warehouse: 'file://{where}/warehouse'}}",
            "sink.params.table=ml.scores",
        ],
        "sql": [
            "sink=sql",
            f"sink.params.url=sqlite:///{where}/out.db",
            "sink.params.table=scores",
        ],
    }


@pytest.fixture(scope="module")
def seed_checkpoint(tmp_path_factory) -> Path:
    """The seed's XGBoost flow without Ray Train: a booster in a checkpoint folder
    (``model.ubj``) and the held-out rows as ``valid.csv``."""
    import xgboost

    from plugins.predictors.xgboost_train import LABEL, breast_cancer_frames

    train, valid = breast_cancer_frames()
    features = [c for c in train.columns if c != LABEL]
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgboost.DMatrix(train[features], label=train[LABEL]),
        num_boost_round=2,
    )
    where = tmp_path_factory.mktemp("seed")
    (where / "checkpoint").mkdir()
    booster.save_model(where / "checkpoint" / "model.ubj")
    valid.to_csv(where / "valid.csv", index=False)
    return where


@pytest.mark.parametrize("sink", ["lance", "iceberg", "sql"])
def test_the_seed_xgboost_job_plans_for_every_table_sink_without_column_types(
    seed_checkpoint, tmp_path, sink
):
    config = compose(
        [
            "+experiment=xgboost_checkpoint",
            f"source.params.path={seed_checkpoint}/valid.csv",
            f"predictor.params.model={seed_checkpoint}/checkpoint",
            *table_sinks(tmp_path)[sink],
            "~sink.params.limit",  # the experiment's show sink prints one row
            "run.dry_run=true",
        ]
    )
    assert "column_types" not in config["sink"]["params"]
    plan = plan_job(config)
    assert plan.output_schema.field("predictions").type == pa.float32()
    assert "target" not in plan.output_schema.names
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # a dry run creates nothing
