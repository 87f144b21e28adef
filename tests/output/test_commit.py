"""The staging folder, unit commits, resume checks and publishing, on real files (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs
import pytest

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.sink import FileOutput
from pipeline.contract.source import WorkUnit
from pipeline.output.publish import _assemble, finish_publishing, prepare, publish
from pipeline.output.records import config_changes
from pipeline.output.staging import MANIFEST, STAGING_SUFFIX, Staging
from pipeline.plan.planner import plan_job

UNITS = [WorkUnit("00000", {"rows": [0, 2]}), WorkUnit("00001", {"rows": [2, 4]})]
STAGES = {"predictor": {"rows_in": 2, "rows_out": 2, "skipped": 0, "dead_letter": 0}}
DATAFLOW = {"predictor": {"type": "m", "params": {"normalize": False}}}


def output(tmp_path: Path, mode: str = "error") -> FileOutput:
    path = str(tmp_path / "out")
    return FileOutput(pyarrow.fs.LocalFileSystem(), path, path, mode)


def write_unit(staging: Staging, unit: WorkUnit, text: str = "a\nb\n") -> dict:
    work = staging.begin(unit)
    Path(work.data).mkdir(parents=True)
    Path(work.data, "part-0.txt").write_text(text)
    return staging.commit(work, STAGES, "predictor", b"", {"part-0.txt": len(text.split())})


def test_a_run_publishes_files_and_a_manifest_only_at_the_end(tmp_path):
    out = output(tmp_path)
    prepared = prepare(out, "fp1", DATAFLOW, UNITS, resume=False)
    markers = [write_unit(prepared.staging, u) for u in UNITS]
    assert not Path(out.path).exists()
    manifest = publish(prepared.staging, markers)
    assert sorted(p.name for p in Path(out.path).iterdir()) == [
        "00000-part-0.txt",
        "00001-part-0.txt",
        MANIFEST,
    ]
    assert (manifest["rows_in"], manifest["rows_out"], manifest["fingerprint"]) == (4, 4, "fp1")
    assert json.loads(Path(out.path, MANIFEST).read_text()) == manifest
    assert not Path(out.path + STAGING_SUFFIX).exists()


def test_a_unit_written_but_not_committed_is_committed_when_resumed(tmp_path):
    """The run died between the unit's receipt and its commit: resume keeps the written
    files instead of running the unit again."""
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    write_unit(staging, UNITS[0])
    work = staging.begin(UNITS[1])
    Path(work.data).mkdir(parents=True)
    Path(work.data, "part-0.txt").write_text("c\nd\ne\n")
    receipt = {"unit": "00001", "rows_in": 3, "rows_out": 3, "rows_set_aside": 0}
    receipt |= {"set_aside": {}, "stages": STAGES, "files": [{"name": "part-0.txt", "rows": 3}]}
    Path(work.root, "receipt.json").write_text(json.dumps(receipt | {"dead_letters": 0}))
    resumed = prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    assert sorted(resumed.committed) == ["00000", "00001"]
    manifest = publish(resumed.staging, [resumed.committed[u.id] for u in UNITS])
    assert manifest["rows_out"] == 5
    assert Path(out.path, "00001-part-0.txt").read_text() == "c\nd\ne\n"


def test_a_commit_refuses_files_the_write_tasks_did_not_report(tmp_path):
    from pipeline.contract.errors import OutputError

    staging = prepare(output(tmp_path), "fp1", DATAFLOW, UNITS, resume=False).staging
    work = staging.begin(UNITS[0])
    Path(work.data).mkdir(parents=True)
    Path(work.data, "part-0.txt").write_text("a\n")
    Path(work.data, "stray.txt").write_text("b\n")
    with pytest.raises(OutputError, match="stray.txt"):
        staging.commit(work, STAGES, "predictor", b"", {"part-0.txt": 1})


def test_an_unfinished_run_is_refused_without_resume_and_resumed_with_it(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    write_unit(staging, UNITS[0])
    staging.begin(UNITS[1])  # killed while writing the second unit
    with pytest.raises(DataError, match="1 of 2 work units committed") as caught:
        prepare(out, "fp1", DATAFLOW, UNITS, resume=False)
    assert caught.value.key == "run.resume"
    resumed = prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    assert list(resumed.committed) == ["00000"] and resumed.resumed
    assert not Path(staging.root, "work").exists(), "the half-written unit is discarded"


def test_resume_with_a_changed_config_is_refused_naming_what_changed(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    write_unit(staging, UNITS[0])
    changed = {"predictor": {"type": "m", "params": {"normalize": True}}}
    with pytest.raises(ConfigError) as caught:
        prepare(out, "fp2", changed, UNITS, resume=True)
    assert caught.value.key == "predictor.params.normalize"
    assert "fingerprint fp1 -> fp2" in caught.value.message
    assert "predictor.params.normalize: false -> true" in caught.value.message
    assert Path(staging.root, "units", "00000.json").exists(), "refusing keeps the work"


def test_resume_with_different_input_units_is_refused(tmp_path):
    out = output(tmp_path)
    write_unit(prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging, UNITS[0])
    with pytest.raises(DataError, match="the input changed"):
        prepare(out, "fp1", DATAFLOW, UNITS + [WorkUnit("00002", {"rows": [4, 6]})], True)


def test_a_publish_killed_half_way_is_finished_by_resume(tmp_path):
    out = output(tmp_path)
    staging = prepare(out, "fp1", DATAFLOW, UNITS, resume=False).staging
    markers = [write_unit(staging, u) for u in UNITS]
    part = _assemble(staging, markers, "")  # files moved into publish/, then the process dies
    staging._write_json(staging._p("publish", MANIFEST), {"rows_out": part["run"]["rows_out"]})
    staging.set_state("publishing")
    again = prepare(out, "fp1", DATAFLOW, UNITS, resume=True)
    finish_publishing(again.staging)
    assert sorted(p.name for p in Path(out.path).iterdir())[:2] == [
        "00000-part-0.txt",
        "00001-part-0.txt",
    ]
    assert not Path(out.path + STAGING_SUFFIX).exists()


def test_append_needs_a_finished_output(tmp_path):
    out = output(tmp_path, "append")
    Path(out.path).mkdir()
    with pytest.raises(DataError, match="no _SUCCESS manifest") as caught:
        prepare(out, "fp1", DATAFLOW, UNITS, resume=False)
    assert caught.value.key == "sink.params.mode"


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
