"""The records a staged output keeps: each one round-trips through JSON unchanged."""

from __future__ import annotations

import json

from pipeline.contract.source import WorkUnit
from pipeline.output.records import FORMAT, JobRecord, Written, unit_digest


def test_a_new_job_record_masks_secrets_and_digests_the_units():
    record = JobRecord.new(
        "f00d",
        {"sink": {"params": {"password": "hunter2", "path": "out"}}},
        [WorkUnit("a.parquet"), WorkUnit("b.parquet")],
        "error",
        "out",
    )
    assert record.state == "running" and record.format == FORMAT and record.run_id
    assert "hunter2" not in json.dumps(record.to_json())
    assert record.units == [unit_digest(WorkUnit("a.parquet")), unit_digest(WorkUnit("b.parquet"))]
    assert "target" not in record.to_json() and "totals" not in record.to_json()


def test_a_job_record_round_trips_through_json_with_keys_it_does_not_know():
    record = JobRecord.new("f00d", {}, [WorkUnit("a")], "append", "db.items")
    record.target = {"staging_table": "items__bulkinfer_x"}
    record.state, record.totals = "publishing", {"rows_out": 3}
    stored = json.loads(json.dumps({**record.to_json(), "written_by": "bulkinfer 0.3"}))
    again = JobRecord.from_json(stored)
    assert again.to_json() == stored
    assert again.target == {"staging_table": "items__bulkinfer_x"} and again.totals == {
        "rows_out": 3
    }


def test_a_written_record_round_trips_and_its_id_names_its_rows():
    record = Written("p1", 3, [[0, 2], [5, 6]], [{"path": "p1.parquet", "rows": 3}], "run-1")
    again = Written.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record and again.id == record.id
    other = Written("p2", 3, [[0, 3]], [{"path": "p2.parquet", "rows": 3}], "run-1")
    assert other.id != record.id
