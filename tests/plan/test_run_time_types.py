"""Stages that declare no output_schema (bulkinfer 0.1's contract): columns decided at run time.

The planner types the columns up to such a stage, says in the plan that the rest is decided at run
time, and checks the sink only once :func:`typed_at_run_time` has the stage's first batch's
columns; the guard then holds every later batch to those types. Without Ray: the first batch's
schema is built here (tests/execute/test_first_batch_types.py takes it from a real job).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from kit import install_kit, job_config

from pipeline.contract.errors import ColumnNotFoundError, DataError, PlanError
from pipeline.contract.stage import MapStage, Predictor
from pipeline.execute.guard import StageGuard, StageOutputError, check_batch_types
from pipeline.plan.planner import plan_job, typed_at_run_time
from pipeline.plan.report import describe

ROWS = [{"id": i, "text": f"text {i}"} for i in range(6)]


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # the test plugin package: kit_shout is written against bulkinfer 0.1


def job(sink: dict[str, Any], *, preprocessors=(), predictor=None, **run) -> dict[str, Any]:
    return job_config(
        ROWS,
        preprocessors=list(preprocessors),
        predictor=predictor or {"type": "kit_shout", "params": {}},
        sink=sink,
        run={"dry_run": True, "progress": False, **run},
    )


def parquet(tmp_path) -> dict[str, Any]:
    return {"type": "parquet", "params": {"path": str(tmp_path / "out")}}


def first_batch(*added: tuple[str, pa.DataType]) -> pa.Schema:
    """What the stage's first batch holds: the input columns and ``added``."""
    return pa.schema([("id", pa.int64()), ("text", pa.string()), *added])


def test_a_stage_that_defines_no_output_schema_is_told_apart_from_one_that_does():
    class Declares(Predictor):
        @classmethod
        def output_schema(cls, params, schema):
            return schema

        def __call__(self, batch):
            return batch

    class Inherits(Declares):  # a subclass keeps its base's declaration
        pass

    class Silent(Predictor):
        def __call__(self, batch):
            return batch

    assert Declares.declares_output_schema() and Inherits.declares_output_schema()
    assert not Silent.declares_output_schema()
    assert not MapStage.declares_output_schema()


def test_the_dry_run_says_the_columns_after_the_stage_are_decided_at_run_time(tmp_path):
    plan = plan_job(job(parquet(tmp_path)))
    assert plan.pending == 0 and plan.pending_step.key == "predictor"
    assert list(plan.schemas) == ["source"]  # typed up to the stage, not past it
    text = describe(plan)
    assert "columns after predictor: decided at run time (the stage declares no output_schema)" in (
        text
    )
    block = text.split("2. predictor:", 1)[1].split("3. sink:", 1)[0]
    assert "columns: decided at run time (the stage declares no output_schema)" in block
    assert not (tmp_path / "out").exists()


def test_stages_after_it_are_typed_from_its_first_batch_not_before(tmp_path):
    """A later stage reads the column the 0.1 stage adds: refused if typed at plan time from the
    pass-through schema, accepted once the first batch has the column."""
    select = {"type": "select_columns", "params": {"columns": ["id", "shout"]}}
    shout = {"type": "kit_shout", "params": {}}
    plan = plan_job(
        job(parquet(tmp_path), preprocessors=[shout, select], predictor={"type": "kit_step"})
    )
    assert plan.pending == 0
    text = describe(plan)
    assert "columns: decided at run time (after preprocessors[0])" in text
    typed = typed_at_run_time(plan, first_batch(("shout", pa.string())))
    assert typed.pending is None and typed.run_time_typed == ("preprocessors[0]",)
    assert typed.schemas["preprocessors[1]"].names == ["id", "shout"]
    assert typed.output_schema.names == ["id", "shout", "out"]
    assert "(typed from its first batch)" in describe(typed)


def test_a_later_stage_that_reads_a_column_the_first_batch_lacks_is_refused_with_its_key(
    tmp_path,
):
    select = {"type": "select_columns", "params": {"columns": ["id", "shout"]}}
    shout = {"type": "kit_shout", "params": {"output_column": "loud"}}
    plan = plan_job(job(parquet(tmp_path), preprocessors=[shout, select]))
    with pytest.raises(ColumnNotFoundError) as caught:
        typed_at_run_time(plan, first_batch(("loud", pa.string())))
    assert caught.value.key.startswith("preprocessors[1].params")


def test_the_sink_is_checked_against_the_first_batchs_columns(tmp_path):
    csv = {"type": "csv", "params": {"path": str(tmp_path / "out")}}
    plan = plan_job(job(csv))  # a list column would be refused: not known yet
    with pytest.raises(DataError, match="column 'shout' is list<string>") as caught:
        typed_at_run_time(plan, first_batch(("shout", pa.list_(pa.string()))))
    assert caught.value.key == "sink"
    assert typed_at_run_time(plan, first_batch(("shout", pa.string()))).pending is None


def test_a_table_targets_check_runs_on_the_first_batchs_columns(tmp_path):
    sql = {"type": "sql", "params": {"url": f"sqlite:///{tmp_path}/out.db", "table": "t"}}
    plan = plan_job(job(sql))
    with pytest.raises(DataError, match="column 'shout'.*cannot be stored in a sqlite table"):
        typed_at_run_time(plan, first_batch(("shout", pa.list_(pa.float32()))))
    typed = typed_at_run_time(plan, first_batch(("shout", pa.string())))
    assert typed.output_schema.field("shout").type == pa.string()
    assert not (tmp_path / "out.db").exists()  # checks create nothing


def test_a_column_null_in_the_first_batch_keeps_the_type_it_had_before_the_stage(tmp_path):
    plan = plan_job(job(parquet(tmp_path)))
    typed = typed_at_run_time(
        plan,
        pa.schema([("id", pa.int64()), ("text", pa.null()), ("shout", pa.null())]),
    )
    assert typed.output_schema.field("text").type == pa.string()
    assert typed.output_schema.field("shout").type == pa.null()  # nothing to keep: decided later


def test_no_output_may_be_opened_while_columns_are_pending(tmp_path):
    plan = plan_job(job(parquet(tmp_path)))
    with pytest.raises(PlanError, match="decided at run time") as caught:
        plan.output_schema  # noqa: B018 - the property raises
    assert caught.value.key == "predictor"


def test_later_batches_are_held_to_the_first_batchs_types():
    guard = StageGuard(
        "predictor",
        "kit_shout",
        schema=first_batch(("shout", pa.string())),
        typed_at_run_time=True,
    )
    ok = pa.table({"id": [1], "text": ["a"], "shout": ["A"]})
    check_batch_types(ok, guard)
    changed = ok.set_column(2, "shout", pa.array([1], pa.int64()))
    with pytest.raises(StageOutputError) as caught:
        check_batch_types(changed, guard)
    message = str(caught.value)
    assert "returned column 'shout' as int64, but its first batch had string" in message
    assert "declares no output_schema" in message and caught.value.key == "predictor"
    extra = ok.append_column("more", pa.array([1.0]))
    with pytest.raises(StageOutputError, match="'more' \\(float64\\), which its first batch"):
        check_batch_types(extra, guard)
