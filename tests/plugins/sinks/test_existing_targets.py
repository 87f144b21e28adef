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
from kit import job_config

from pipeline.app.main import compose
from pipeline.contract.errors import ConfigError, DataError
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


# -- existing datasets and tables, checked at plan time ----------------------------------------

TEXTS = [{"id": i, "text": f"review {i}"} for i in range(3)]


def job(sink: dict, predictor: dict | None = None, items: list | None = None) -> dict:
    return job_config(items or TEXTS, predictor=predictor, sink=sink, run={"dry_run": True})


#: The default predictor: 384-d MiniLM vectors (typed from the packaged model's configs).
EMBED = {"type": "sentence_embedding", "params": {}}


def vectors(dim: int, rows: int = 2) -> pa.Array:
    values = pa.array([0.5] * (dim * rows), pa.float32())
    return pa.FixedSizeListArray.from_arrays(values, dim)


def test_an_append_of_384_d_vectors_to_an_8_d_lance_dataset_is_refused_before_the_job(tmp_path):
    import lance

    path = tmp_path / "reviews.lance"
    existing = pa.table({"id": pa.array([7, 8]), "text": ["a", "b"], "embedding": vectors(8)})
    lance.write_dataset(existing, str(path))
    sink = {"type": "lance", "params": {"path": str(path), "mode": "append"}}
    with pytest.raises(DataError) as caught:
        plan_job(job(sink, EMBED))
    assert caught.value.key == "sink.params.mode"
    assert caught.value.message == (
        f"cannot append to {path}: its columns differ ('embedding' holds vectors of 384 values "
        "here, 8 there). Set sink.params.mode=overwrite or choose another path."
    )
    assert lance.dataset(str(path)).version == 1  # nothing written


def test_a_lancedb_table_is_checked_the_same_way(tmp_path):
    import lancedb

    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("reviews", pa.table({"id": pa.array(["x"]), "text": ["a"]}))
    sink = {"type": "lance", "params": {"path": str(tmp_path / "db" / "reviews.lance")}}
    sink["params"]["mode"] = "append"
    with pytest.raises(DataError, match="'id' is int64 here, string there") as caught:
        plan_job(job(sink))
    assert caught.value.key == "sink.params.mode"
    db.create_table("wider", pa.table({"id": pa.array([1], pa.int64()), "text": ["a"]}))
    narrow = [{"id": 1, "text": "b"}]
    sink["params"]["path"] = str(tmp_path / "db" / "wider.lance")
    plan_job(job(sink, items=narrow))  # int64 into int64, string into string: fits


def test_an_iceberg_table_the_output_does_not_fit_is_one_line_ending_with_the_fix(tmp_path, capsys):
    sink = {
        "type": "iceberg",
        "params": {
            "catalog": {
                "type": "sql",
                "uri": f"sqlite:///{tmp_path}/catalog.db",
                "warehouse": f"file://{tmp_path}/warehouse",
            },
            "table": "ml.reviews",
        },
    }
    from plugins.sinks.targets.iceberg_target import IcebergParams, IcebergTarget

    catalog = IcebergTarget(IcebergParams(**sink["params"])).catalog()
    catalog.create_namespace("ml")
    catalog.create_table("ml.reviews", schema=pa.schema([("id", pa.int64()), ("text", pa.int32())]))
    capsys.readouterr()
    with pytest.raises(DataError) as caught:
        plan_job(job(sink, items=[{"id": 1, "text": "a", "extra": 1.5}]))
    message = str(caught.value)
    assert message == (
        "sink.params.table: the output does not fit table ml.reviews: the table lacks extra; "
        "'text' is string here, int32 there. Give the columns the table's names and types "
        "(cast with sink.params.column_types), leave the others out before the sink, or write "
        "another table (sink.params.table)."
    )
    assert "\n" not in message and "union_by_name" not in message
    assert capsys.readouterr().out == ""  # pyiceberg's report table is not printed


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, monkeypatch) -> dict:
    """A fresh database: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path}/out.db"}
    from test_sql_target import new_pg_database

    return new_pg_database(request.getfixturevalue("postgres"), monkeypatch)


def execute(params: dict, *statements: str) -> None:
    import sqlalchemy as sa

    from plugins.sinks.targets.sql_params import SqlParams
    from plugins.sinks.targets.sql_target import _engine

    engine = _engine(SqlParams(table="t", **params))
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()


def test_an_sql_table_whose_columns_differ_is_refused_before_the_job(database):
    execute(
        database,
        "CREATE TABLE reviews (id BIGINT, text REAL, note TEXT NOT NULL)",
    )
    sink = {"type": "sql", "params": {**database, "table": "reviews", "mode": "append"}}
    with pytest.raises(DataError) as caught:
        plan_job(job(sink, items=[{"id": 1, "text": "a", "stars": 5}]))
    assert caught.value.key == "sink.params.mode"
    assert "it has no column stars" in caught.value.message
    assert "'text' holds floats there, text here" in caught.value.message
    assert "the output lacks note, which are NOT NULL there" in caught.value.message
    assert caught.value.message.endswith("or choose another table.")


def test_a_narrower_sql_column_is_refused_where_the_database_keeps_widths(database):
    execute(database, "CREATE TABLE scores (id INTEGER, score REAL)")
    sink = {"type": "sql", "params": {**database, "table": "scores", "mode": "append"}}
    rows = [{"id": 2**40, "score": 0.1}]  # int64 and float64
    if database["url"].startswith("sqlite"):
        plan_job(job(sink, items=rows))  # SQLite's columns hold any integer, 64-bit floats
        return
    with pytest.raises(DataError) as caught:
        plan_job(job(sink, items=rows))
    assert "'id' holds 32-bit integers there, 64-bit here" in caught.value.message
    assert "'score' holds 32-bit floats there, 64-bit here" in caught.value.message


def test_sqlite_refuses_a_schema_in_the_table_name_in_one_line(tmp_path):
    sink = {"type": "sql", "params": {"url": f"sqlite:///{tmp_path}/out.db", "table": "ml.x"}}
    with pytest.raises(ConfigError) as caught:
        plan_job(job(sink))
    assert caught.value.key == "sink.params.table"
    assert "SQLite has no schemas" in caught.value.message
    assert "name the table alone (x)" in caught.value.message
    assert not (tmp_path / "out.db").exists()


def test_postgresql_writes_schema_dot_table_and_refuses_a_schema_it_lacks(pg_database):
    import sqlalchemy as sa

    from plugins.sinks.targets.protocol import receipt
    from plugins.sinks.targets.sql_params import SqlParams
    from plugins.sinks.targets.sql_target import SqlTarget, _engine

    sink = {"type": "sql", "params": {**pg_database, "table": "ml.reviews"}}
    with pytest.raises(DataError) as caught:
        plan_job(job(sink))
    assert caught.value.key == "sink.params.table"
    assert caught.value.message.startswith("schema 'ml' does not exist in postgresql+psycopg://")

    execute(pg_database, "CREATE SCHEMA ml")
    plan = plan_job(job(sink))  # the dry run now passes
    target = SqlTarget(SqlParams(**sink["params"]))
    state = target.begin("run-1", plan.output_schema)
    rows = pa.table({"id": pa.array([1, 2], pa.int64()), "text": ["a", "b"]})
    parts = target.writer(state, "u0").write([rows])
    target.publish(state, [receipt("u0", parts)])
    engine = _engine(SqlParams(**sink["params"]))
    with engine.connect() as connection:
        got = connection.execute(sa.text("SELECT id, text FROM ml.reviews ORDER BY id")).all()
        left = sa.inspect(connection).get_table_names(schema="ml")
    engine.dispose()
    assert [tuple(r) for r in got] == [(1, "a"), (2, "b")]
    assert left == ["reviews"]  # staging tables and job record dropped in the same schema


@pytest.fixture
def pg_database(postgres, monkeypatch) -> dict:
    from test_sql_target import new_pg_database

    return new_pg_database(postgres, monkeypatch)
