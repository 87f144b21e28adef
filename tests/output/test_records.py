"""The records a staged output keeps: each one round-trips through JSON unchanged."""

from __future__ import annotations

import json

from pipeline.contract.source import WorkUnit
from pipeline.output.records import (
    FORMAT,
    JobRecord,
    Manifest,
    ManifestRun,
    OutputFile,
    Receipt,
    Totals,
    UnitReceipt,
    Written,
    unit_digest,
)

#: A job's totals as bulkinfer 0.2 wrote them (in a manifest's runs, a table job's record).
TOTALS = {
    "rows_in": 40,
    "rows_out": 38,
    "rows_set_aside": 2,
    "set_aside": {"predictor": {"skipped": 0, "dead_letter": 2}},
    "stages": {"predictor": {"rows_in": 40, "rows_out": 38, "skipped": 0, "dead_letter": 2}},
}

#: A ``_SUCCESS`` manifest as bulkinfer 0.2 wrote it (two runs: the output was appended to).
MANIFEST = {
    "format": "bulkinfer-manifest/1",
    "fingerprint": "4b766af3b335ff21",
    "location": "/data/out",
    "mode": "append",
    "rows_in": 80,
    "rows_out": 76,
    "rows_set_aside": 4,
    "set_aside": {"predictor": {"skipped": 0, "dead_letter": 4}},
    "files": [
        {"path": "000000-3f2a9c1e.parquet", "rows": 38},
        {"path": "20261126T051139-5d4992-000000-77aa01bc.parquet", "rows": 38},
    ],
    "error_files": [{"path": "_errors/20261126T041139-4c3881.jsonl", "rows": 2}],
    "runs": [
        {
            "run_id": "20261126T041139-4c3881",
            "fingerprint": "4b766af3b335ff21",
            "finished_at": "2026-11-26T04:12:02+00:00",
            "parts": 4,
            **TOTALS,
        },
        {
            "run_id": "20261126T051139-5d4992",
            "fingerprint": "4b766af3b335ff21",
            "finished_at": "2026-11-26T05:12:40+00:00",
            "parts": 3,
            **TOTALS,
        },
    ],
}

#: What a published table job reported in bulkinfer 0.2 (``RunResult.manifest``).
RECEIPT = {
    "run_id": "20261126T041139-4c3881",
    "fingerprint": "4b766af3b335ff21",
    "location": "sqlite:///db.sqlite#items",
    "mode": "append",
    **TOTALS,
    "published": {"rows": 38, "already": False, "version": 3},
}


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
    record.state, record.totals = "publishing", Totals.from_json(TOTALS)
    stored = json.loads(json.dumps({**record.to_json(), "written_by": "bulkinfer 0.3"}))
    again = JobRecord.from_json(stored)
    assert again.to_json() == stored
    assert again.target == {"staging_table": "items__bulkinfer_x"}
    assert again.totals is not None and again.totals.rows_out == 38


def test_a_table_job_record_as_the_previous_version_wrote_it_reads_back_the_same():
    stored = {
        "format": FORMAT,
        "run_id": "20261126T041139-4c3881",
        "fingerprint": "f00d",
        "dataflow": {"sink": {"type": "sql"}},
        "units": ["00000:0123456789abcdef"],
        "mode": "append",
        "location": "db.items",
        "state": "publishing",
        "started_at": "2026-11-26T04:11:39+00:00",
        "target": {"staging_table": "items__bulkinfer_stage"},
        "totals": TOTALS,
    }
    record = JobRecord.from_json(json.loads(json.dumps(stored)))
    assert record.to_json() == stored and record.state == "publishing"
    assert record.totals == Totals(**{k: v for k, v in TOTALS.items()})


def test_a_written_record_round_trips_and_its_id_names_its_rows():
    record = Written("p1", 3, [[0, 2], [5, 6]], [{"path": "p1.parquet", "rows": 3}], "run-1")
    again = Written.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record and again.id == record.id
    other = Written("p2", 3, [[0, 3]], [{"path": "p2.parquet", "rows": 3}], "run-1")
    assert other.id != record.id


def test_totals_keep_counts_they_do_not_know():
    stored = {**TOTALS, "rows_filtered": 5}
    totals = Totals.from_json(stored)
    assert (totals.rows_in, totals.rows_out, totals.rows_set_aside) == (40, 38, 2)
    assert totals.extra == {"rows_filtered": 5} and totals.to_json() == stored


def test_a_manifest_as_the_previous_version_wrote_it_writes_back_the_same_keys():
    stored = json.loads(json.dumps(MANIFEST))
    manifest = Manifest.from_json(stored)
    assert manifest.to_json() == stored
    assert json.dumps(manifest.to_json(), sort_keys=True) == json.dumps(MANIFEST, sort_keys=True)
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_set_aside) == (80, 76, 4)
    assert manifest.files[0] == OutputFile("000000-3f2a9c1e.parquet", 38)
    assert [r.run_id for r in manifest.runs] == [
        "20261126T041139-4c3881",
        "20261126T051139-5d4992",
    ]
    assert manifest.runs[0].totals == Totals.from_json(TOTALS) and manifest.published is None


def test_a_manifest_round_trips_with_keys_it_does_not_know_at_every_level():
    stored = json.loads(json.dumps(MANIFEST))
    stored["written_by"] = "bulkinfer 0.3"
    stored["files"][0]["bytes"] = 1234
    stored["runs"][1]["host"] = "node-1"
    manifest = Manifest.from_json(stored)
    assert manifest.extra == {"written_by": "bulkinfer 0.3"}
    assert manifest.files[0].extra == {"bytes": 1234}
    assert manifest.runs[1].totals.extra == {"host": "node-1"}
    assert manifest.to_json() == stored


def test_a_manifest_of_runs_adds_their_totals_up():
    job = JobRecord.new("4b766af3b335ff21", {}, [WorkUnit("a")], "append", "/data/out")
    runs = [ManifestRun.from_json(r) for r in MANIFEST["runs"]]
    files = [OutputFile.from_json(f) for f in MANIFEST["files"]]
    errors = [OutputFile.from_json(f) for f in MANIFEST["error_files"]]
    manifest = Manifest.of_runs(job, files, errors, runs)
    assert manifest.to_json() == MANIFEST


def test_a_receipt_as_the_previous_version_reported_it_writes_back_the_same_keys():
    stored = json.loads(json.dumps(RECEIPT))
    receipt = Receipt.from_json(stored)
    assert receipt.to_json() == stored
    assert (receipt.rows_in, receipt.rows_out, receipt.rows_set_aside) == (40, 38, 2)
    assert (receipt.rows_published, receipt.already) == (38, False)
    job = JobRecord.from_json(
        {
            "run_id": RECEIPT["run_id"],
            "fingerprint": RECEIPT["fingerprint"],
            "location": RECEIPT["location"],
            "mode": "append",
            "totals": TOTALS,
        }
    )
    assert Receipt.of(job, RECEIPT["published"]).to_json() == RECEIPT


def test_a_unit_receipt_is_what_targets_take_for_a_written_record():
    record = Written("p1", 3, [[0, 3]], [{"path": "p1.parquet", "rows": 3}], "run-1")
    receipt = UnitReceipt.of(record)
    assert receipt.to_json() == {"unit": record.id, "rows": 3, "parts": record.written}
    assert UnitReceipt.from_json(receipt.to_json()) == receipt
    # A target's own receipt (plugins/sinks/targets/protocol.py: receipt) with a key of its own.
    stored = {"unit": "all", "rows": 5, "parts": [{"rows": 5}], "engine": "lance"}
    assert UnitReceipt.from_json(stored).to_json() == stored
    assert UnitReceipt.from_json({"parts": [{"rows": 2}, {"rows": 3}]}).rows == 5
