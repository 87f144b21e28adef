"""The Lance target on real Lance and LanceDB (embedded, local folders; no Ray).

Each unit is staged with the writer a Ray write task would run; the tests then play the
runner's part: commit receipts, crash, resume, publish.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.contract.errors import ConfigError, DataError
from plugins.sinks.targets.lance_target import LanceParams, LanceTarget
from plugins.sinks.targets.protocol import receipt

DIM = 8
SCHEMA = pa.schema(
    [("id", pa.int64()), ("text", pa.string()), ("vec", pa.list_(pa.float32(), DIM))]
)


def rows(lo: int, hi: int) -> pa.Table:
    """Rows ``lo..hi-1``; a row's vector depends on its id only."""
    vectors = np.random.default_rng(0).random((hi, DIM), dtype=np.float32)[lo:]
    return pa.table(
        {
            "id": pa.array(range(lo, hi), pa.int64()),
            "text": [f"row {i}" for i in range(lo, hi)],
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
        }
    )


def target(path, **params) -> LanceTarget:
    return LanceTarget(LanceParams(path=str(path), **params))


def stage(t: LanceTarget, state: dict, unit: str, *tables: pa.Table) -> dict:
    """What one unit's write tasks do (here one task per table), as the unit's receipt."""
    parts = [p for table in tables for p in t.writer(state, unit).write([table])]
    return receipt(unit, parts)


def ids(path) -> list[int]:
    import lance

    return sorted(lance.dataset(str(path)).to_table(columns=["id"])["id"].to_pylist())


def test_units_stay_invisible_until_one_commit_publishes_them_all(tmp_path):
    path = tmp_path / "db" / "items.lance"
    t = target(path, max_rows_per_file=100)
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 150)), stage(t, state, "u1", rows(150, 250))]
    assert [r["rows"] for r in receipts] == [150, 100]
    assert t.open() is None  # staged files, no dataset
    outcome = t.publish(state, receipts)
    assert outcome == {"rows": 250, "already": False, "version": 1}  # no index: no more keys
    assert ids(path) == list(range(250))

    import lance
    import lancedb

    ds = lance.dataset(str(path))
    assert ds.schema == SCHEMA
    assert ds.to_table().sort_by("id").slice(7, 1).to_pylist() == rows(7, 8).to_pylist()
    table = lancedb.connect(str(tmp_path / "db")).open_table("items")
    assert table.count_rows() == 250


def test_a_repeated_publish_finds_its_commit_and_adds_nothing(tmp_path):
    t = target(tmp_path / "items.lance")
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 10))]
    first = t.publish(state, receipts)
    again = t.publish(state, receipts)  # a crash after the commit, before the job record knew
    assert again == {**first, "already": True}
    assert t.open().version == first["version"] and ids(tmp_path / "items.lance") == list(range(10))


def test_mode_error_refuses_an_existing_dataset_and_a_folder_that_is_not_one(tmp_path):
    import lance

    lance.write_dataset(rows(0, 3), str(tmp_path / "items.lance"))
    with pytest.raises(DataError, match="already exists.*version 1, 3 rows") as caught:
        target(tmp_path / "items.lance").check(SCHEMA)
    assert caught.value.key == "sink.params.path"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a Lance dataset.*notes.txt"):
        target(tmp_path / "other", mode="overwrite").check(SCHEMA)


def test_overwrite_replaces_the_rows_only_when_published(tmp_path):
    import lance

    path = tmp_path / "items.lance"
    lance.write_dataset(rows(1000, 1005), str(path))
    t = target(path, mode="overwrite")
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    receipts = [stage(t, state, "u0", rows(0, 20))]
    assert ids(path) == list(range(1000, 1005))  # readers still see the old rows
    assert t.publish(state, receipts)["version"] == 2
    assert ids(path) == list(range(20))
    assert lance.dataset(str(path), version=1).count_rows() == 5  # the old version stays


def test_append_adds_a_version_and_refuses_other_columns(tmp_path):
    import lance

    path = tmp_path / "items.lance"
    lance.write_dataset(rows(0, 5), str(path))
    t = target(path, mode="append")
    t.check(SCHEMA)
    state = t.begin("run-1", SCHEMA)
    t.publish(state, [stage(t, state, "u0", rows(5, 9))])
    assert ids(path) == list(range(9))
    with pytest.raises(DataError, match="columns differ.*the dataset lacks score") as caught:
        t.check(SCHEMA.append(pa.field("score", pa.float32())))
    assert caught.value.key == "sink.params.mode"


def test_a_crash_between_units_leaves_the_dataset_as_it_was_and_resume_adds_each_row_once(
    tmp_path,
):
    import lance

    path = tmp_path / "items.lance"
    lance.write_dataset(rows(1000, 1003), str(path))
    t = target(path, mode="append")
    state = t.begin("run-1", SCHEMA)
    committed = {"u0": stage(t, state, "u0", rows(0, 10))}
    killed = stage(t, state, "u1", rows(10, 15))  # its marker was never written: a crash
    assert lance.dataset(str(path)).version == 1 and ids(path) == [1000, 1001, 1002]

    # The resumed run: discard what the uncommitted unit left, redo it, publish.
    t.discard(state, ["u1"], [killed])
    committed["u1"] = stage(t, state, "u1", rows(10, 20))
    t.publish(state, [committed["u0"], committed["u1"]])
    assert ids(path) == [*range(20), 1000, 1001, 1002]


def test_discard_deletes_the_staged_files_and_abandon_the_unborn_dataset(tmp_path):
    path = tmp_path / "items.lance"
    t = target(path)
    state = t.begin("run-1", SCHEMA)
    r = stage(t, state, "u0", rows(0, 10), rows(10, 20))
    assert len(list((path / "data").iterdir())) == 2
    t.discard(state, ["u0"], [r])
    assert list((path / "data").iterdir()) == []
    stage(t, state, "u1", rows(0, 10))
    t.abandon(state)
    assert not path.exists()


def test_a_nearest_neighbour_query_finds_a_row_by_its_own_vector(tmp_path):
    import lance
    import lancedb

    path = tmp_path / "db" / "items.lance"
    declared = SCHEMA.set(2, pa.field("vec", pa.list_(pa.float32())))  # length not declared
    params = {"column": "vec", "index_type": "IVF_PQ", "dim": DIM}
    t = target(path, vector_index=params)
    t.check(declared)
    state = t.begin("run-1", declared)
    table = rows(0, 300)
    as_lists = table.set_column(2, "vec", table["vec"].cast(pa.list_(pa.float32())))
    t.publish(state, [stage(t, state, "u0", as_lists)])

    ds = lance.dataset(str(path))
    assert ds.schema.field("vec").type == pa.list_(pa.float32(), DIM)
    assert [i.name for i in ds.describe_indices()] == ["vec_idx"]
    probe = np.asarray(table["vec"][123].values, dtype=np.float32)
    hits = ds.to_table(nearest={"column": "vec", "q": probe, "k": 3}, columns=["id"])
    assert 123 in hits["id"].to_pylist()
    found = lancedb.connect(str(tmp_path / "db")).open_table("items").search(probe).limit(3)
    assert 123 in [hit["id"] for hit in found.to_list()]


def test_a_vector_index_needs_a_fixed_length(tmp_path):
    declared = SCHEMA.set(2, pa.field("vec", pa.list_(pa.float32())))
    with pytest.raises(DataError, match="needs fixed-length vectors") as caught:
        target(tmp_path / "x.lance", vector_index={"column": "vec"}).check(declared)
    assert caught.value.key == "sink.params.vector_index.dim"
    with pytest.raises(DataError, match="not a list of floats"):
        target(tmp_path / "x.lance", vector_index={"column": "text"}).check(declared)


def test_a_column_without_a_type_yet_is_refused_unless_column_types_gives_one(tmp_path):
    declared = SCHEMA.append(pa.field("later", pa.null()))
    with pytest.raises(DataError, match="column 'later' has no type until the model") as caught:
        target(tmp_path / "x.lance").check(declared)
    assert caught.value.key == "sink.params.column_types.later"
    typed = target(tmp_path / "x.lance", column_types={"later": "float32"})
    typed.check(declared)
    state = typed.begin("run-1", declared)
    table = rows(0, 3).append_column("later", pa.array([0.5, 1.5, 2.5], pa.float64()))
    typed.publish(state, [stage(typed, state, "u0", table)])
    got = typed.open().to_table()
    assert got.schema.field("later").type == pa.float32()
    assert got.column("later").to_pylist() == [0.5, 1.5, 2.5]
    with pytest.raises(ConfigError, match="'nope' is not in the output") as caught:
        target(tmp_path / "y.lance", column_types={"nope": "int64"}).check(SCHEMA)
    assert caught.value.key == "sink.params.column_types.nope"


def test_rows_that_do_not_fit_the_declared_vector_length_are_named(tmp_path):
    t = target(tmp_path / "x.lance", vector_index={"column": "vec", "dim": 3})
    declared = SCHEMA.set(2, pa.field("vec", pa.list_(pa.float32())))
    state = t.begin("run-1", declared)
    bad = rows(0, 2).set_column(2, "vec", pa.array([[1.0, 2.0]] * 2, pa.list_(pa.float32())))
    with pytest.raises(DataError, match="column 'vec'"):
        t.writer(state, "u0").write([bad])


def test_storage_credentials_come_from_the_environment(tmp_path, monkeypatch):
    t = target(tmp_path / "x.lance", storage_options_env={"aws_secret_access_key": "NO_SUCH_VAR"})
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_VAR is not set") as caught:
        t.check(SCHEMA)
    assert caught.value.key == "sink.params.storage_options_env.aws_secret_access_key"


def test_an_appending_run_folds_its_rows_into_the_existing_index(tmp_path):
    import lance

    path = tmp_path / "items.lance"
    for run, (lo, hi) in enumerate([(0, 100), (100, 150)]):
        t = target(path, mode="append", vector_index={"column": "vec", "index_type": "IVF_FLAT"})
        state = t.begin(f"run-{run}", SCHEMA)
        assert t.publish(state, [stage(t, state, "u0", rows(lo, hi))])["index"] == "vec_idx"
    ds = lance.dataset(str(path))
    assert ds.index_statistics("vec_idx")["num_unindexed_rows"] == 0
    probe = np.asarray(rows(0, 150)["vec"][120].values, dtype=np.float32)
    hits = ds.to_table(nearest={"column": "vec", "q": probe, "k": 1}, columns=["id"])
    assert hits["id"].to_pylist() == [120]
