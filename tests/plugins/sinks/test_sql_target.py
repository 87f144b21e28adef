"""The SQL target on real databases: SQLite through SQLAlchemy, and PostgreSQL when a server can
be started on this machine (the ``postgres`` fixture skips, saying why, when it cannot).

Each unit is staged with the writer a Ray write task would run; the tests then play the
runner's part: commit receipts, crash, resume, publish.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pyarrow as pa
import pytest
import sqlalchemy as sa

from pipeline.contract.errors import ConfigError, DataError
from plugins.sinks.targets.protocol import receipt
from plugins.sinks.targets.sql_target import SqlParams, SqlTarget

PASSWORD_ENV = "BULKINFER_TEST_PGPASSWORD"
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("text", pa.string()),
        ("score", pa.float32()),
        ("ok", pa.bool_()),
        ("at", pa.timestamp("ns", tz="UTC")),
        ("vec", pa.list_(pa.float32(), 3)),
    ]
)
_databases = itertools.count()


def rows(lo: int, hi: int, score: float = 0.5) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(lo, hi), pa.int64()),
            "text": [f"row {i}" for i in range(lo, hi)],
            "score": pa.array([score + i for i in range(lo, hi)], pa.float32()),
            "ok": [i % 2 == 0 for i in range(lo, hi)],
            "at": pa.array([T0 + dt.timedelta(seconds=i) for i in range(lo, hi)], SCHEMA[4].type),
            "vec": pa.array([[i, 0.25, -1.5] for i in range(lo, hi)], SCHEMA[5].type),
        }
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path, monkeypatch) -> dict:
    """Params that reach a fresh, empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return {"url": f"sqlite:///{tmp_path}/out.db", "json_columns": ["vec"]}
    return new_pg_database(request.getfixturevalue("postgres"), monkeypatch)


@pytest.fixture
def pg_db(postgres, monkeypatch) -> dict:
    return new_pg_database(postgres, monkeypatch)


def new_pg_database(server, monkeypatch) -> dict:
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    name = f"test_{next(_databases)}"
    admin = sa.create_engine(
        server.url().replace("://bulkinfer@", f"://bulkinfer:{server.password}@"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return {"url": server.url(database=name), "password_env": PASSWORD_ENV}


def target(db: dict, **params) -> SqlTarget:
    return SqlTarget(SqlParams(**{"table": "items", **db, **params}))


def stage(t: SqlTarget, state: dict, unit: str, *tables: pa.Table) -> dict:
    """What one unit's write tasks do (here one task per table), as the unit's receipt."""
    parts = [p for table in tables for p in t.writer(state, unit).write([table])]
    return receipt(unit, parts)


def fetch(t: SqlTarget, table: str = "items", order: str = "id") -> list[dict]:
    engine = t.engine()
    try:
        with engine.connect() as connection:
            reflected = sa.Table(table, sa.MetaData(), autoload_with=connection)
            query = sa.select(reflected).order_by(reflected.c[order])
            return [dict(row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def tables(t: SqlTarget) -> list[str]:
    engine = t.engine()
    try:
        return sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def ids(t: SqlTarget) -> list[int]:
    return [row["id"] for row in fetch(t)]


def test_rows_appear_in_one_transaction_with_their_values(db):
    t = target(db, batch_rows=7)
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 20)), stage(t, state, "u1", rows(20, 25))]
    assert [r["rows"] for r in receipts] == [20, 5]
    assert "items" not in tables(t)
    assert t.publish(state, receipts) == {"rows": 25, "already": False}
    assert tables(t) == ["items"]  # the staging tables went in the same transaction
    got = fetch(t)
    assert [r["id"] for r in got] == list(range(25))
    first = got[3]
    assert (first["text"], first["score"], bool(first["ok"])) == ("row 3", 3.5, False)
    at = first["at"]  # SQLite keeps UTC text without a zone; PostgreSQL a timestamptz
    assert (at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)) == T0 + dt.timedelta(seconds=3)
    assert list(first["vec"]) == [3.0, 0.25, -1.5]


def test_a_repeated_publish_finds_the_work_done_and_adds_nothing(db):
    t = target(db)
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 4))]
    t.publish(state, receipts)
    assert t.publish(state, receipts) == {"rows": 4, "already": True}
    assert ids(t) == [0, 1, 2, 3]


def test_only_receipted_parts_are_published(db):
    """A write task Ray retried leaves its first attempt's rows staged under another part."""
    t = target(db)
    state = t.begin("run-1", SCHEMA)
    t.writer(state, "u0").write([rows(0, 3)])  # the attempt whose result never came back
    retried = stage(t, state, "u0", rows(0, 3))
    t.publish(state, [retried])
    assert ids(t) == [0, 1, 2]


def test_a_crash_between_units_leaves_the_table_as_it_was_and_resume_adds_each_row_once(db):
    t = target(db, mode="append")
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(100, 102))])

    state = t.begin("run-1", SCHEMA)
    committed = stage(t, state, "u0", rows(0, 10))
    t.writer(state, "u1").write([rows(10, 13)])  # killed before its receipt was kept
    assert ids(t) == [100, 101]

    t.discard(state, ["u1"], [])  # the resumed run drops the unit's staged rows
    redone = stage(t, state, "u1", rows(10, 20))
    t.publish(state, [committed, redone])
    assert ids(t) == [*range(20), 100, 101]


def test_mode_error_refuses_an_existing_table_before_the_job(db):
    t = target(db)
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(0, 1))])
    with pytest.raises(DataError, match="table already exists") as caught:
        t.check(SCHEMA)
    assert caught.value.key == "sink.params.table"


def test_replace_swaps_the_table_only_when_published(db):
    t = target(db, mode="replace")
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(100, 103))])
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 2))]
    assert ids(t) == [100, 101, 102]
    t.publish(state, receipts)
    assert ids(t) == [0, 1]


def test_a_failure_inside_publish_changes_nothing(db):
    """The new table's key is NOT NULL; a staged row without one fails the INSERT after the old
    table was dropped and the new one created: the transaction rolls all of it back."""
    t = target(db, mode="replace", key_columns=["id"])
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(100, 103))])
    state = t.begin("run-1", SCHEMA)
    bad = rows(0, 2).set_column(0, "id", pa.array([1, None], pa.int64()))
    receipts = [stage(t, state, "u0", bad)]
    with pytest.raises(DataError, match="publishing into .* failed"):
        t.publish(state, receipts)
    assert ids(t) == [100, 101, 102]
    assert "items__bulkinfer_stage" in tables(t)  # the staged work is still there
    t.abandon(state)
    assert tables(t) == ["items"]


def test_upsert_by_key_columns_updates_and_inserts(db):
    t = target(db, mode="append", key_columns=["id"])
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(0, 3, score=0.5))])
    t.check(SCHEMA)  # the table it created has the key as primary key
    state = t.begin("run-1", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(2, 5, score=10.5))])
    assert [(r["id"], r["score"]) for r in fetch(t)] == [
        (0, 0.5),
        (1, 1.5),
        (2, 12.5),
        (3, 13.5),
        (4, 14.5),
    ]


def test_upsert_refuses_duplicate_keys_and_a_table_without_a_unique_key(db):
    t = target(db, mode="append", key_columns=["id"])
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 2)), stage(t, state, "u1", rows(1, 3))]
    with pytest.raises(DataError, match=r"several rows per key \(id=1 \(2 rows\)\)"):
        t.publish(state, receipts)
    t.abandon(state)

    plain = target(db, mode="append")
    state = plain.begin("run-2", SCHEMA)
    plain.publish(state, [stage(plain, state, "u0", rows(0, 2))])
    with pytest.raises(DataError, match="no primary key or unique constraint") as caught:
        t.check(SCHEMA)
    assert caught.value.key == "sink.params.key_columns"


def test_sqlite_refuses_a_vector_column_unless_stored_as_json(tmp_path):
    url = f"sqlite:///{tmp_path}/out.db"
    with pytest.raises(DataError, match="column 'vec' .* sqlite has no array type") as caught:
        target({"url": url}).check(SCHEMA)
    assert "json_columns=[vec]" in caught.value.message
    t = target({"url": url, "json_columns": ["vec"]})
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    table = rows(0, 3).set_column(
        5, "vec", pa.array([[0.1, 2.0, -1.5], [float("nan"), None, 0.0], None], SCHEMA[5].type)
    )
    t.publish(state, [stage(t, state, "u0", table)])
    engine = t.engine()
    with engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT vec FROM items ORDER BY id").scalars().all()
    engine.dispose()
    # float32 values in their shortest form; NaN as Python's json writes it, missing values null
    assert stored == ["[0.1, 2, -1.5]", "[NaN, null, 0]", None]
    got = [row["vec"] for row in fetch(t)]  # SQLAlchemy's JSON type reads NaN back
    assert str(got) == str([[0.1, 2, -1.5], [float("nan"), None, 0], None])  # str: nan == nan


def test_json_vectors_keep_nan_and_infinities_as_the_same_float32(tmp_path):
    """docs/sinks.md: JSON that reads back as the same float32, NaN and infinities included."""
    import json

    import numpy as np

    t = target({"url": f"sqlite:///{tmp_path}/out.db", "json_columns": ["vec"]})
    state = t.begin("run-1", SCHEMA)
    vectors = [[float("nan"), float("inf"), float("-inf")], [0.1, -0.0, 3.4e38], [1e-45, 7, None]]
    table = rows(0, 3).set_column(5, "vec", pa.array(vectors, SCHEMA[5].type))
    t.publish(state, [stage(t, state, "u0", table)])
    engine = t.engine()
    with engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT vec FROM items ORDER BY id").scalars().all()
    engine.dispose()
    assert stored[0] == "[NaN, Infinity, -Infinity]"
    back = np.array([json.loads(text) for text in stored], dtype=np.float32)
    expected = table.column("vec").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(back.reshape(-1), expected.astype(np.float32))  # NaN == NaN


def nan_table() -> pa.Table:
    special = [float("nan"), float("inf"), float("-inf")]
    return rows(0, 3).set_column(2, "score", pa.array(special, pa.float32()))


def test_sqlite_keeps_infinities_but_refuses_a_nan_it_would_store_as_null(tmp_path):
    t = target({"url": f"sqlite:///{tmp_path}/out.db", "json_columns": ["vec"]})
    state = t.begin("run-1", SCHEMA)
    with pytest.raises(DataError) as caught:
        stage(t, state, "u0", nan_table())
    error = caught.value
    assert error.key == "sink.params.nan_as_null"
    assert "column 'score' holds NaN, which a SQLite REAL column stores as NULL" in error.message
    assert "sink.params.nan_as_null=true" in error.message and "\n" not in error.message
    t.abandon(state)
    assert "items" not in tables(t)  # nothing published
    finite = nan_table().set_column(
        2, "score", pa.array([1.0, float("inf"), float("-inf")], pa.float32())
    )
    state = t.begin("run-2", SCHEMA)
    t.publish(state, [stage(t, state, "u0", finite)])
    assert [row["score"] for row in fetch(t)] == [1.0, float("inf"), float("-inf")]


def test_nan_as_null_stores_null_in_sqlite_where_asked(tmp_path):
    t = target(
        {"url": f"sqlite:///{tmp_path}/out.db", "json_columns": ["vec"], "nan_as_null": True}
    )
    state = t.begin("run-1", SCHEMA)
    t.publish(state, [stage(t, state, "u0", nan_table())])
    assert [row["score"] for row in fetch(t)] == [None, float("inf"), float("-inf")]


def test_postgresql_keeps_nan_and_infinities_in_real_columns(pg_db):
    t = target(pg_db)
    state = t.begin("run-1", SCHEMA)
    t.publish(state, [stage(t, state, "u0", nan_table())])
    assert str([row["score"] for row in fetch(t)]) == "[nan, inf, -inf]"


def test_postgresql_jsonb_refuses_nan_and_infinities_or_stores_nan_as_null(pg_db):
    vectors = pa.array([[float("nan"), 1.0, 2.0], [0.5, 0.25, None], None], SCHEMA[5].type)
    table = rows(0, 3).set_column(5, "vec", vectors)
    t = target(pg_db, json_columns=["vec"])
    state = t.begin("run-1", SCHEMA)
    with pytest.raises(DataError, match="column 'vec' holds NaN, which PostgreSQL's jsonb") as e:
        stage(t, state, "u0", table)
    assert e.value.key == "sink.params.nan_as_null" and "json_columns" in e.value.message
    infinite = table.set_column(5, "vec", pa.array([[float("inf"), 0, 0]] * 3, SCHEMA[5].type))
    with pytest.raises(DataError, match="column 'vec' holds an infinity") as e:
        stage(t, state, "u0", infinite)
    assert e.value.key == "sink.params.json_columns"
    t.abandon(state)
    t = target(pg_db, json_columns=["vec"], nan_as_null=True)
    state = t.begin("run-2", SCHEMA)
    t.publish(state, [stage(t, state, "u0", table)])
    assert [row["vec"] for row in fetch(t)] == [[None, 1.0, 2.0], [0.5, 0.25, None], None]


def test_postgresql_stores_vectors_as_real_arrays(pg_db):
    t = target(pg_db)
    state = t.begin("run-1", SCHEMA)
    special = [[0.1, float("inf"), None], [float("nan"), -0.0, 1e-30], None]
    table = rows(0, 3).set_column(5, "vec", pa.array(special, SCHEMA[5].type))
    t.publish(state, [stage(t, state, "u0", table)])
    engine = t.engine()
    with engine.connect() as connection:
        kind = connection.exec_driver_sql(
            "SELECT data_type, udt_name FROM information_schema.columns "
            "WHERE table_name = 'items' AND column_name = 'vec'"
        ).one()
    engine.dispose()
    assert tuple(kind) == ("ARRAY", "_float4")
    got = pa.array([row["vec"] for row in fetch(t)], SCHEMA[5].type)
    assert str(got.to_pylist()) == str(table["vec"].to_pylist())  # str: nan == nan


def test_a_password_in_the_url_is_refused_and_one_from_the_environment_is_used(
    postgres, monkeypatch
):
    with pytest.raises(ValueError, match="holds a password"):
        SqlParams(url="postgresql+psycopg://u:secret@h/db", table="t")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    t = target({"url": postgres.url(), "password_env": PASSWORD_ENV})
    with pytest.raises(ConfigError, match=f"{PASSWORD_ENV} is not set"):
        t.check(SCHEMA)
    monkeypatch.setenv(PASSWORD_ENV, "wrong-" + postgres.password)
    with pytest.raises(DataError, match="connecting to .* failed: .*password authentication") as e:
        t.check(SCHEMA)
    assert postgres.password not in str(e.value)
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    t.check(SCHEMA)
    assert postgres.password not in t.location
