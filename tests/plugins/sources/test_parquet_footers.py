"""Parquet files whose footers disagree on a column's type: refused before the job when no type
holds both (naming the column and both files), read with the wider type when one does. The
footers are those the empty-input check reads anyway (up to 64 files)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contract.errors import DataError
from pipeline.plan.planner import plan_job


def write(folder: Path, **files: pa.Table) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in files.items():
        pq.write_table(table, folder / f"{name}.parquet")
    return folder


def job(path: Path, sink: dict, **source) -> dict:
    return {
        "source": {"type": "parquet", "params": {"path": str(path), **source}},
        "sink": sink,
        "run": {"dry_run": True, "progress": False},
    }


def test_a_string_column_where_the_first_file_held_doubles_is_refused_before_the_job(tmp_path):
    """The issue's case: an SQL append whose second file holds strings in a double column."""
    folder = write(
        tmp_path / "in",
        a=pa.table({"id": [1, 2], "score": [0.5, 1.5]}),
        b=pa.table({"id": [3, 4], "score": ["high", "low"]}),
    )
    sink = {
        "type": "sql",
        "params": {"url": f"sqlite:///{tmp_path}/out.db", "table": "scores", "mode": "append"},
    }
    with pytest.raises(DataError) as caught:
        plan_job(job(folder, sink))
    assert caught.value.key == "source.params.path"
    assert caught.value.message == (
        f"column 'score' is float64 in {folder}/a.parquet and string in {folder}/b.parquet, and "
        "no type holds both unchanged. Declare the type to convert them to "
        "(source.params.schema={score: string}) or read the files apart"
    )
    assert not (tmp_path / "out.db").exists()


def test_int64_and_float64_are_refused_until_the_type_is_declared(tmp_path):
    folder = write(
        tmp_path / "in",
        a=pa.table({"x": pa.array([2**53 + 1], pa.int64())}),  # no float64 holds it
        b=pa.table({"x": pa.array([0.5])}),
    )
    sink = {"type": "parquet", "params": {"path": str(tmp_path / "out")}}
    with pytest.raises(DataError, match=r"\(source.params.schema=\{x: float64\}\)"):
        plan_job(job(folder, sink))
    plan = plan_job(job(folder, sink, schema={"x": "float64"}))
    assert plan.output_schema.field("x").type == pa.float64()


def test_types_that_widen_without_change_are_read_as_the_wider_one(tmp_path):
    folder = write(
        tmp_path / "in",
        a=pa.table({"id": pa.array([1], pa.int32()), "x": pa.array([0.5], pa.float32())}),
        b=pa.table({"id": pa.array([2], pa.int64()), "x": pa.array([1.5]), "new": ["n"]}),
        c=pa.table({"id": pa.array([3], pa.int16())}),
    )
    sink = {"type": "parquet", "params": {"path": str(tmp_path / "out")}}
    plan = plan_job(job(folder, sink))
    assert plan.schemas["source"] == pa.schema([("id", pa.int64()), ("x", pa.float64())])


@pytest.mark.ray
def test_a_job_over_files_of_widening_types_writes_one_type_and_every_value(ray_session, tmp_path):
    from pipeline.execute.runner import run_job

    folder = write(
        tmp_path / "in",
        a=pa.table({"id": pa.array([1, 2], pa.int32()), "x": pa.array([0.5, 1.0], pa.float32())}),
        b=pa.table({"id": pa.array([3], pa.int64()), "x": pa.array([0.1]), "new": ["n"]}),
        c=pa.table({"id": pa.array([4], pa.int16())}),
    )
    out = tmp_path / "out"
    config = job(folder, {"type": "parquet", "params": {"path": str(out)}})
    config["run"] = {"progress": False, "unit_bytes": 1}  # a work unit per file
    run_job(config)
    files = sorted(out.rglob("*.parquet"))
    assert len(files) >= 3
    assert {pq.read_schema(f).remove_metadata() for f in files} == {
        pa.schema([("id", pa.int64()), ("x", pa.float64())])
    }
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["id"])
    assert rows == [
        {"id": 1, "x": 0.5},
        {"id": 2, "x": 1.0},
        {"id": 3, "x": 0.1},
        {"id": 4, "x": None},  # c.parquet has no x
    ]
