"""The Iceberg target on pyiceberg with a SQL catalog on SQLite and a local warehouse (no Ray).

Each unit is staged with the writer a Ray write task would run; the tests then play the
runner's part: commit receipts, crash, resume, publish.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from pipeline.contract.errors import ConfigError, DataError
from plugins.sinks.targets.iceberg_target import RUN_PROPERTY, IcebergParams, IcebergTarget
from plugins.sinks.targets.iceberg_types import iceberg_arrow_schema
from plugins.sinks.targets.protocol import receipt

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("text", pa.string()),
        ("vec", pa.list_(pa.float32(), 3)),
        ("count", pa.uint32()),
        ("at", pa.timestamp("ns", tz="Europe/Paris")),
    ]
)
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def rows(lo: int, hi: int) -> pa.Table:
    n = hi - lo
    return pa.table(
        {
            "id": pa.array(range(lo, hi), pa.int64()),
            "text": [f"row {i}" for i in range(lo, hi)],
            "vec": pa.array([[i, i + 0.5, -i] for i in range(lo, hi)], pa.list_(pa.float32(), 3)),
            "count": pa.array([4_000_000_000 + i for i in range(lo, hi)], pa.uint32()),
            "at": pa.array([T0 + dt.timedelta(seconds=i) for i in range(lo, hi)], SCHEMA[4].type),
        },
        schema=SCHEMA,
    )[:n]


@pytest.fixture
def catalog_props(tmp_path) -> dict[str, str]:
    (tmp_path / "warehouse").mkdir()
    return {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path}/catalog.db",
        "warehouse": f"file://{tmp_path}/warehouse",
    }


def target(catalog_props, **params) -> IcebergTarget:
    return IcebergTarget(IcebergParams(catalog=catalog_props, table="ns.items", **params))


def stage(t: IcebergTarget, state: dict, unit: str, *tables: pa.Table) -> dict:
    """What one unit's write tasks do (here one task per table), as the unit's receipt."""
    parts = [p for table in tables for p in t.writer(state, unit).write([table])]
    return receipt(unit, parts)


def read(t: IcebergTarget) -> pa.Table:
    return t.load().scan().to_arrow().sort_by("id")


def expected(*tables: pa.Table) -> pa.Table:
    table = pa.concat_tables(tables)
    return table.cast(iceberg_arrow_schema(table.schema)).sort_by("id")


def test_a_new_table_and_its_rows_appear_in_one_commit(catalog_props, tmp_path):
    t = target(catalog_props, max_rows_per_file=40)
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 100)), stage(t, state, "u1", rows(100, 130))]
    assert [len(r["parts"]) for r in receipts] == [3, 1]
    assert t.catalog().list_namespaces() == []  # nothing in the catalog yet
    assert state["location"] == f"{catalog_props['warehouse']}/ns/items"
    outcome = t.publish(state, receipts)
    assert outcome["rows"] == 130 and not outcome["already"]

    table = t.load()
    assert [s.summary.get(RUN_PROPERTY) for s in table.snapshots()] == ["run-1"]
    assert str(table.schema().find_field("count").field_type) == "long"
    assert str(table.schema().find_field("vec").field_type) == "list<float>"
    assert str(table.schema().find_field("at").field_type) == "timestamptz"
    assert read(t).equals(expected(rows(0, 130)))
    assert read(t)["count"][0].as_py() == 4_000_000_000  # no 32-bit overflow
    assert read(t)["at"][1].as_py() == T0 + dt.timedelta(seconds=1)


def test_readers_see_the_old_snapshot_until_publish_and_append_adds_one(catalog_props):
    t = target(catalog_props)
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(0, 5))])
    reader = t.load()
    before = reader.current_snapshot().snapshot_id

    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(5, 8)), stage(t, state, "u1", rows(8, 10))]
    assert reader.refresh().current_snapshot().snapshot_id == before
    assert read(t).num_rows == 5
    t.publish(state, receipts)
    assert reader.refresh().current_snapshot().parent_snapshot_id == before
    assert read(t).equals(expected(rows(0, 10)))


def test_overwrite_replaces_the_rows_in_one_commit_and_keeps_history(catalog_props):
    t = target(catalog_props)
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(100, 105))])
    old = t.load().current_snapshot().snapshot_id

    t = target(catalog_props, mode="overwrite")
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 3))]
    assert read(t)["id"].to_pylist() == list(range(100, 105))
    metadata_versions = len(t.load().metadata.metadata_log)
    t.publish(state, receipts)
    table = t.load()
    assert read(t).equals(expected(rows(0, 3)))
    assert len(table.metadata.metadata_log) == metadata_versions + 1  # one catalog commit
    ops = [(s.summary.operation.value, s.summary.get(RUN_PROPERTY)) for s in table.snapshots()]
    assert ops == [("append", "run-0"), ("delete", "run-1"), ("append", "run-1")]
    assert table.scan(snapshot_id=old).to_arrow().num_rows == 5


def test_a_repeated_publish_finds_its_snapshot_and_commits_nothing(catalog_props):
    t = target(catalog_props)
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 4))]
    first = t.publish(state, receipts)
    again = t.publish(state, receipts)
    assert again == {**first, "already": True}
    assert len(t.load().snapshots()) == 1 and read(t).num_rows == 4


def test_a_crash_between_units_changes_nothing_and_resume_adds_each_row_once(
    catalog_props, tmp_path
):
    t = target(catalog_props)
    state = t.begin("run-0", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(1000, 1002))])
    snapshots = len(t.load().snapshots())

    state = t.begin("run-1", SCHEMA)
    committed = stage(t, state, "u0", rows(0, 10))
    t.writer(state, "u1").write([rows(10, 12)])  # killed before its receipt reached the driver
    assert len(t.load().snapshots()) == snapshots and read(t).num_rows == 2

    t.discard(state, ["u1"], [])  # the resumed run drops the unit's folder, receipt or not
    redone = stage(t, state, "u1", rows(10, 20))
    t.publish(state, [committed, redone])
    assert read(t).equals(expected(rows(1000, 1002), rows(0, 20)))


def test_abandon_removes_everything_the_run_staged(catalog_props, tmp_path):
    t = target(catalog_props)
    state = t.begin("run-1", SCHEMA)
    stage(t, state, "u0", rows(0, 3))
    stage(t, state, "u1", rows(3, 6))
    t.abandon(state)
    assert not list((tmp_path / "warehouse").rglob("*.parquet"))
    assert t.load() is None


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        (pa.uint64(), "unsigned 64-bit"),
        (pa.null(), "no type until the model runs"),
        (pa.duration("s"), "duration"),
    ],
)
def test_columns_iceberg_cannot_hold_are_refused_by_name(catalog_props, column, reason):
    with pytest.raises(DataError, match=f"column 'bad' .*{reason}"):
        target(catalog_props).check(SCHEMA.append(pa.field("bad", column)))


def test_an_existing_table_that_the_output_does_not_fit_is_refused(catalog_props):
    t = target(catalog_props)
    t.catalog().create_namespace("ns")
    t.catalog().create_table("ns.items", schema=pa.schema([("id", pa.string())]))
    with pytest.raises(DataError, match="does not fit table ns.items") as caught:
        t.check(SCHEMA)
    assert caught.value.key == "sink.params.table"


def test_a_partitioned_table_is_refused(catalog_props):
    t = target(catalog_props)
    t.catalog().create_namespace("ns")
    table = t.catalog().create_table("ns.items", schema=iceberg_arrow_schema(SCHEMA))
    with table.update_spec() as spec:
        spec.add_identity("id")
    with pytest.raises(DataError, match="partitioned"):
        t.check(SCHEMA)


def test_catalog_credentials_come_from_the_environment(catalog_props, monkeypatch):
    uri = catalog_props.pop("uri")
    t = target(catalog_props, catalog_env={"uri": "BULKINFER_TEST_CATALOG_URI"})
    monkeypatch.delenv("BULKINFER_TEST_CATALOG_URI", raising=False)
    with pytest.raises(ConfigError, match="BULKINFER_TEST_CATALOG_URI is not set") as caught:
        t.check(SCHEMA)
    assert caught.value.key == "sink.params.catalog_env.uri"
    monkeypatch.setenv("BULKINFER_TEST_CATALOG_URI", uri)
    state = t.begin("run-1", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(0, 2))])
    assert read(t).num_rows == 2
    assert uri not in str(state) and uri not in repr(t.params)


def test_a_catalog_url_with_a_password_is_refused():
    with pytest.raises(ValueError, match="uri holds a URL with a password.*catalog_env.uri"):
        IcebergParams(catalog={"type": "sql", "uri": "postgresql://u:pw@h/cat"}, table="a.b")
