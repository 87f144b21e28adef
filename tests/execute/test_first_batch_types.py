"""A stage that declares no output_schema, on local Ray: its columns typed from its first batch.

:func:`typed_by_first_batch` runs the stage until it hands on a row, types the plan from that
block and checks the sink, before any output is opened; :func:`execute` then runs the typed plan
and the guard holds every batch to the first batch's types. The stage is ``kit_shout`` from the
test plugin package, written against bulkinfer 0.1's contract (tests/plugin_kit).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from kit import install_kit, job_config

from pipeline.contract.errors import DataError
from pipeline.execute.compile import typed_by_first_batch
from pipeline.execute.guard import StageOutputError
from pipeline.execute.runner import execute
from pipeline.plan.planner import plan_job

ROWS = [{"id": i, "text": f"text number {i}"} for i in range(12)]


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # before ray_session starts Ray, so its workers import the kit too


pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the module


def job(sink: dict[str, Any], **shout: Any) -> dict[str, Any]:
    return job_config(ROWS, predictor={"type": "kit_shout", "params": shout}, sink=sink)


def test_the_added_column_is_typed_from_the_first_batch_and_written(tmp_path):
    out = tmp_path / "out"
    plan = plan_job(job({"type": "parquet", "params": {"path": str(out)}}))
    assert plan.pending == 0
    typed = typed_by_first_batch(plan)
    assert typed.pending is None and typed.run_time_typed == ("predictor",)
    assert typed.output_schema.field("shout").type == pa.string()
    assert not out.exists()  # typing wrote nothing
    execute(typed)
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: r["id"])
    assert [r["shout"] for r in rows] == [r["text"].upper() for r in ROWS]


def test_a_column_the_sink_cannot_hold_stops_the_job_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    plan = plan_job(job({"type": "csv", "params": {"path": str(out)}}, as_list=True))
    with pytest.raises(DataError, match="column 'shout' is list<string>, which sink 'csv'") as e:
        typed_by_first_batch(plan)
    assert e.value.key == "sink"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_table_sink_creates_its_table_with_the_first_batchs_columns(tmp_path):
    url = f"sqlite:///{tmp_path}/out.db"
    plan = plan_job(job({"type": "sql", "params": {"url": url, "table": "shouts"}}))
    execute(typed_by_first_batch(plan))
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, shout FROM shouts ORDER BY id")).all()
        kinds = {c["name"]: str(c["type"]) for c in sa.inspect(connection).get_columns("shouts")}
    engine.dispose()
    assert [tuple(r) for r in rows] == [(r["id"], r["text"].upper()) for r in ROWS]
    assert kinds["shout"] == "TEXT"


def test_a_batch_whose_type_changes_later_fails_the_job_naming_the_stage(tmp_path):
    out = tmp_path / "out"
    plan = plan_job(job({"type": "parquet", "params": {"path": str(out)}}, lengths_from_id=8))
    typed = typed_by_first_batch(plan)  # ids 0-3 come first: text
    with pytest.raises(StageOutputError) as caught:
        execute(typed)
    message = str(caught.value)
    assert "returned column 'shout' as int64, but its first batch had string" in message
    assert caught.value.key == "predictor"
    assert not out.exists()  # nothing published
