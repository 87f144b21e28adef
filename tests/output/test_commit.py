"""The staging folder, the records of written parts, resume checks and publishing, on real
files (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs
import pytest

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.sink import FileOutput
from pipeline.contract.source import WorkUnit
from pipeline.output.progress import Progress, ranges_of, row_id
from pipeline.output.publish import _assemble, finish_publishing, prepare, publish
from pipeline.output.records import Totals, Written, config_changes
from pipeline.output.staging import MANIFEST, STAGING_SUFFIX, Staging
from pipeline.plan.planner import plan_job

UNITS = [WorkUnit("00000", {"rows": [0, 2]}), WorkUnit("00001", {"rows": [2, 4]})]
TOTALS = Totals(rows_in=4, rows_out=4)
DATAFLOW = {"predictor": {"type": "m", "params": {"normalize": False}}}


def output(tmp_path: Path, mode: str = "error") -> FileOutput:
    path = str(tmp_path / "out")
    return FileOutput(pyarrow.fs.LocalFileSystem(), path, path, mode)


def write_part(staging: Staging, part: str, unit: int, text: str = "a\nb\n") -> Written:
    """What a write task does: its file in parts/, then its record."""
    Path(staging.parts).mkdir(parents=True, exist_ok=True)
    Path(staging.parts, f"{part}.txt").write_text(text)
    rows = len(text.split())
    ids = [row_id(unit, i) for i in range(rows)]
    record = Written(part, rows, ranges_of(ids), [{"name": f"{part}.txt", "rows": rows}], "r1")
    staging.add_marker(record.to_json())
    return record


def test_a_run_publishes_the_recorded_files_and_a_manifest_only_at_the_end(tmp_path):
    out = output(tmp_path)
    prepared = prepare(out, "fp1", DATAFLOW, UNITS, resume=False)
    records = [write_part(prepared.staging, f"p{u}", u) for u in range(2)]
    Path(prepared.staging.parts, "stray.txt").write_text("x\n")  # a task stopped before its record
    assert not Path(out.path).exists()
    manifest = publish(prepared.staging, records, TOTALS)
    assert sorted(p.name for p in Path(out.path).iterdir()) == sorted(
        [MANIFEST, "p0.txt", "p1.txt"]
    )
    assert (manifest.rows_in, manifest.rows_out, manifest.fingerprint) == (4, 4, "fp1")
    assert json.loads(Path(out.path, MANIFEST).read_text()) == manifest.to_json()
    assert not Path(out.path + STAGING_SUFFIX).exists()


def test_records_are_the_journal_a_resumed_run_reads_back(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    first = write_part(staging, "p0", 0)
    again = write_part(staging, "p0-retried", 0)  # Ray ran the task twice: the same rows
    assert first.id == again.id, "a record's name comes from the rows it holds"
    resumed = prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    assert [r.part for r in resumed.written] == ["p0-retried"] and resumed.resumed
    done = Progress(r for w in resumed.written for r in w.ranges)
    assert done.rows == 2
    assert done.pending([row_id(0, 0), row_id(0, 1), row_id(0, 2)]).tolist() == [
        False,
        False,
        True,
    ]


def test_an_unfinished_run_is_refused_without_resume_and_resumed_with_it(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    write_part(staging, "p0", 0)
    with pytest.raises(DataError, match=r"\(2 rows written\)") as caught:
        prepare(out, "fp1", DATAFLOW, UNITS, resume=False)
    assert caught.value.key == "run.resume"
    resumed = prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    assert [r.part for r in resumed.written] == ["p0"] and resumed.resumed


def test_resume_with_a_changed_config_is_refused_naming_what_changed(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    record = write_part(staging, "p0", 0)
    changed = {"predictor": {"type": "m", "params": {"normalize": True}}}
    with pytest.raises(ConfigError) as caught:
        prepare(out, "fp2", changed, UNITS, resume=True)
    assert caught.value.key == "predictor.params.normalize"
    assert "fingerprint fp1 -> fp2" in caught.value.message
    assert "predictor.params.normalize: false -> true" in caught.value.message
    assert Path(staging.root, "units", f"{record.id}.json").exists(), "refusing keeps the work"


def test_resume_with_different_input_units_is_refused(tmp_path):
    out = output(tmp_path)
    write_part(prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging, "p0", 0)
    with pytest.raises(DataError, match="the input changed"):
        prepare(out, "fp1", DATAFLOW, UNITS + [WorkUnit("00002", {"rows": [4, 6]})], True)


def test_a_publish_killed_half_way_is_finished_by_resume(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    records = [write_part(staging, f"p{u}", u) for u in range(2)]
    part = _assemble(staging, records, TOTALS, "")  # files moved into publish/, then it dies
    staging.write_json(staging.path("publish", MANIFEST), {"rows_out": part.run.totals.rows_out})
    staging.set_state("publishing")
    again = prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    finish_publishing(again.staging)
    assert sorted(p.name for p in Path(out.path).iterdir()) == sorted(
        [MANIFEST, "p0.txt", "p1.txt"]
    )
    assert not Path(out.path + STAGING_SUFFIX).exists()


def test_append_needs_a_finished_output(tmp_path):
    out = output(tmp_path, "append")
    Path(out.path).mkdir()
    with pytest.raises(DataError, match="no _SUCCESS manifest") as caught:
        prepare(out, "fp1", DATAFLOW, UNITS, resume=False)
    assert caught.value.key == "sink.params.mode"


def test_row_ids_become_merged_ranges_and_back():
    ids = [row_id(1, 5), row_id(0, 0), row_id(0, 1), row_id(0, 2), row_id(1, 4)]
    assert ranges_of(ids) == [[0, 3], [row_id(1, 4), row_id(1, 6)]]
    done = Progress([[0, 3]])
    assert done.overlaps([[2, 5]]) and not done.overlaps([[3, 5]])
    assert done.pending([row_id(1, 0)]) is None  # nothing of that unit is written


def test_config_changes_lists_changed_added_and_removed_keys():
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    new = {"a": {"b": 2, "c": [1]}, "e": "y"}
    assert config_changes(old, new) == [
        "a.b: 1 -> 2",
        'a.c[1]: 2 -> "<unset>"',
        'd: "x" -> "<unset>"',
        'e: "<unset>" -> "y"',
    ]


def test_the_fingerprint_ignores_how_a_stage_runs_but_not_what_it_computes():
    def plan(**stage):
        return plan_job(
            {
                "source": {"type": "items", "params": {"items": ["a"], "column": "text"}},
                "predictor": {"type": "sentence_embedding", "stage": stage},
                "sink": {"type": "show"},
            }
        )

    base = plan().fingerprint
    assert plan(concurrency=2, num_cpus=0.5, max_error_rate=0.5).fingerprint == base
    assert plan(on_error="skip").fingerprint != base


def test_append_onto_an_output_the_previous_version_published_keeps_its_manifest(tmp_path):
    out = output(tmp_path, "append")
    Path(out.path).mkdir()
    Path(out.path, "old.txt").write_text("x\ny\n")
    run = {"run_id": "20261126T041139-4c3881", "fingerprint": "fp1", "parts": 1}
    run |= {"finished_at": "2026-11-26T04:12:02+00:00", **TOTALS.to_json(), "rows_out": 2}
    previous = {
        "format": "bulkinfer-manifest/1",
        "fingerprint": "fp1",
        "location": out.location,
        "mode": "append",
        "rows_in": 4,
        "rows_out": 2,
        "rows_set_aside": 0,
        "set_aside": {},
        "files": [{"path": "old.txt", "rows": 2}],
        "error_files": [],
        "runs": [run],
    }
    Path(out.path, MANIFEST).write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    records = [write_part(staging, f"p{u}", u) for u in range(2)]
    publish(staging, records, TOTALS)
    stored = json.loads(Path(out.path, MANIFEST).read_text())
    assert set(stored) == set(previous) and stored["runs"][0] == run
    assert (stored["rows_in"], stored["rows_out"], len(stored["runs"])) == (8, 6, 2)
    assert stored["files"][0] == {"path": "old.txt", "rows": 2} and len(stored["files"]) == 3


def test_resuming_a_job_whose_output_is_published_is_refused_and_writes_nothing(tmp_path):
    """A process killed after its publish (before it could say so) leaves a finished job;
    ``run.resume=true`` then names the run that published it instead of running the job
    again (with append, twice over). The same config on other input appends as usual."""
    out = output(tmp_path, "append")
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    first = publish(staging, [write_part(staging, f"p{u}", u) for u in range(2)], TOTALS)
    with pytest.raises(
        DataError, match="nothing to resume: .* already holds this job's output"
    ) as no:
        prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    assert f"published by run {first.runs[0].run_id} at " in no.value.message
    assert no.value.key == "run.resume"
    assert not Path(out.path + STAGING_SUFFIX).exists(), "nothing staged by the refusal"
    more = [*UNITS, WorkUnit("00002", {"rows": [4, 6]})]  # the input grew: a new job
    assert not prepare(out, "fp1", DATAFLOW, more, resume=True).resumed
    # Without run.resume the same job runs again: append is what was asked.
    Path(out.path + STAGING_SUFFIX).rename(tmp_path / "dropped")
    assert not prepare(out, "fp1", DATAFLOW, UNITS, resume=False).resumed


def test_resuming_a_published_job_in_mode_error_says_it_is_done(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    publish(staging, [write_part(staging, "p0", 0)], TOTALS)
    with pytest.raises(DataError, match="nothing to resume") as caught:
        prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    assert caught.value.key == "run.resume"
    with pytest.raises(DataError, match="output already exists"):  # another job's input
        prepare(out, "fp1", DATAFLOW, UNITS[:1], resume=True)
    with pytest.raises(DataError, match="output already exists"):  # another config
        prepare(out, "fp2", DATAFLOW, UNITS, resume=True)
