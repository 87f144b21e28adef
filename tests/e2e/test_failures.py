"""Bad rows, killed workers and output modes, end to end on local Ray (in this process).

The stages come from a test plugin package (tests/plugin_kit, discovered through its entry
points like any pip-installed plugin): ``kit_step`` copies ``id`` into ``out`` (times ten), fails
on chosen ids, sleeps and records which processes ran it.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kit import install_kit

from pipeline.app.main import run_with_overrides
from pipeline.contract.errors import BulkInferError, DataError
from pipeline.output.progress import UNIT_SHIFT
from pipeline.output.staging import STAGING_SUFFIX

N = 40


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # before ray_session starts Ray, so its workers import the kit too


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(N)))
    return path


def job(rows: Path, out: Path, *overrides: str):
    """Run rows.jsonl -> kit_step predictor -> Parquet at ``out``; returns the RunResult."""
    return run_with_overrides(
        [
            "source=json",
            f"source.params.path={rows}",
            "predictor.type=kit_step",
            f"sink.params.path={out}",
            "run.progress=false",
            *overrides,
        ]
    )


def read_ids(out: Path) -> list[int]:
    return sorted(pq.read_table(out, columns=["id"]).column("id").to_pylist())


def manifest(out: Path) -> dict:
    return json.loads((out / "_SUCCESS").read_text())


def dead_letters(out: Path) -> list[dict]:
    return [json.loads(line) for f in (out / "_errors").glob("*.jsonl") for line in f.open()]


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not Path(str(out) + STAGING_SUFFIX).exists()


def assert_nothing_published(out: Path, error: BulkInferError) -> None:
    """A failed job publishes nothing; rows it wrote before the failure are kept for
    ``run.resume=true`` only if the message says so (else no staging is left)."""
    assert not out.exists()
    staging = Path(str(out) + STAGING_SUFFIX)
    if staging.exists():
        assert "rows written) is kept in" in error.message, error.message
        assert (staging / "job.json").exists()
    else:
        assert "is kept in" not in error.message


def written_ids(staging: Path, rows_per_unit: int) -> set[int]:
    """The ``id`` of each row the write tasks' records hold (unit ``u``, offset ``i`` is id
    ``u * rows_per_unit + i``)."""
    done = set()
    for record in staging.glob("units/*.json"):
        for start, stop in json.loads(record.read_text())["ranges"]:
            for row in range(start, stop):
                done.add((row >> UNIT_SHIFT) * rows_per_unit + (row & ((1 << UNIT_SHIFT) - 1)))
    return done


def test_dead_letter_sets_aside_only_the_bad_rows_and_the_manifest_adds_up(
    ray_session, rows, tmp_path
):
    out = tmp_path / "out"
    result = job(
        rows,
        out,
        "+predictor.params.fail_ids=[3,17]",
        "+predictor.stage.on_error=dead_letter",
        "+predictor.stage.max_error_rate=0.1",
    )
    assert read_ids(out) == [i for i in range(N) if i not in (3, 17)]
    letters = sorted(dead_letters(out), key=lambda r: r["row"]["id"])
    assert [r["row"] for r in letters] == [{"id": 3, "text": "row 3"}, {"id": 17, "text": "row 17"}]
    assert {r["stage"] for r in letters} == {"predictor"}
    assert "ValueError: bad row id=3" in letters[0]["error"]
    m = manifest(out)
    assert (m["rows_in"], m["rows_out"], m["rows_set_aside"]) == (N, N - 2, 2)
    assert m["rows_in"] == m["rows_out"] + m["rows_set_aside"]
    assert m["set_aside"] == {"predictor": {"dead_letter": 2, "skipped": 0}}
    assert m["error_files"] and all((out / f["path"]).exists() for f in m["error_files"])
    assert sum(f["rows"] for f in m["files"]) == N - 2
    assert result.rows_set_aside == 2


def test_skip_in_a_task_stage_drops_only_the_bad_rows_and_keeps_no_dead_letters(
    ray_session, rows, tmp_path
):
    out = tmp_path / "out"
    job(
        rows,
        out,
        "+preprocessors=[{type: kit_step, params: {output_column: pre, fail_ids: [0, 39]}, "
        "stage: {on_error: skip, max_error_rate: 0.1}}]",
    )
    assert read_ids(out) == list(range(1, N - 1))
    assert not (out / "_errors").exists()
    m = manifest(out)
    assert (m["rows_in"], m["rows_out"], m["rows_set_aside"]) == (N, N - 2, 2)
    assert m["set_aside"] == {"preprocessors[0]": {"dead_letter": 0, "skipped": 2}}


def test_a_stage_over_its_error_limit_stops_the_job_naming_the_stage(ray_session, rows, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        job(
            rows,
            out,
            f"+predictor.params.fail_ids={list(range(0, N, 5))}",
            "+predictor.stage.on_error=skip",
            "+predictor.stage.max_error_rate=0.05",
        )
    assert caught.value.key == "predictor.stage.max_error_rate"
    assert "stage 'kit_step' set aside 8 of 40 rows" in caught.value.message
    assert "bad row id=" in caught.value.message
    assert not out.exists()


def test_on_error_fail_stops_at_the_first_bad_batch_naming_the_stage_and_publishes_nothing(
    ray_session, rows, tmp_path
):
    out = tmp_path / "out"
    with pytest.raises(BulkInferError) as caught:
        job(rows, out, "+predictor.params.fail_ids=[21]")
    assert caught.value.key == "predictor"
    assert "stage 'kit_step' failed on a batch" in caught.value.message
    assert "ValueError: bad row id=21" in caught.value.message
    assert_nothing_published(out, caught.value)


@pytest.mark.parametrize(
    ("where", "overrides"),
    [
        ("predictor", ["predictor.params.refuse_ids=[21]"]),
        (
            "preprocessors[0]",
            ["preprocessors=[{type: kit_step, params: {refuse_ids: [21], output_column: pre}}]"],
        ),
    ],
)
def test_an_error_raised_inside_a_worker_names_its_key_in_full(
    ray_session, rows, tmp_path, where, overrides
):
    """A plugin names its keys relative to its block; the user sees where the block is."""
    with pytest.raises(DataError) as caught:
        job(rows, tmp_path / "out", *overrides)
    assert caught.value.key == f"{where}.params.refuse_ids"
    assert "row id=21 is refused" in caught.value.message
    assert_nothing_published(tmp_path / "out", caught.value)


def _wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_killed_predictor_actor_is_restarted_and_the_output_is_exact(ray_session, rows, tmp_path):
    out, log_dir = tmp_path / "out", tmp_path / "log"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = job(
                rows,
                out,
                f"+predictor.params.log_dir={log_dir}",
                "+predictor.params.sleep_s=0.25",
                "+predictor.params.fail_ids=[5,33]",
                "+predictor.stage.on_error=dead_letter",
                "+predictor.stage.max_error_rate=0.1",
                "+predictor.stage.batch_size=2",
            )
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    def inits() -> list[Path]:
        return sorted(log_dir.glob("init-*")) if log_dir.exists() else []

    thread = threading.Thread(target=run)
    thread.start()

    def busy() -> bool:
        logs = list(log_dir.glob("ids-*.txt")) if log_dir.exists() else []
        return any(len(f.read_text().split()) >= 8 for f in logs)

    _wait_for(busy, what="the actor to process some batches")
    [first] = inits()
    victim = int(first.name.split("-")[1])
    os.kill(victim, signal.SIGKILL)  # the actor process this test's job started
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert len(inits()) >= 2, "the pool should have started a new actor"
    assert read_ids(out) == [i for i in range(N) if i not in (5, 33)]
    assert sorted(r["row"]["id"] for r in dead_letters(out)) == [5, 33]
    m = manifest(out)
    assert (m["rows_in"], m["rows_out"], m["rows_set_aside"]) == (N, N - 2, 2)


def test_append_adds_the_new_files_and_sums_the_manifest(ray_session, rows, tmp_path):
    out = tmp_path / "out"
    job(rows, out)
    first = manifest(out)
    job(rows, out, "sink.params.mode=append")
    m = manifest(out)
    assert len(m["runs"]) == 2 and (m["rows_in"], m["rows_out"]) == (2 * N, 2 * N)
    assert {f["path"] for f in first["files"]} < {f["path"] for f in m["files"]}
    assert all((out / f["path"]).exists() for f in m["files"])
    assert read_ids(out) == sorted(list(range(N)) * 2)


def test_overwrite_keeps_the_old_output_when_the_job_fails(ray_session, rows, tmp_path):
    out = tmp_path / "out"
    job(rows, out, "+predictor.params.output_column=old")
    with pytest.raises(BulkInferError):
        job(rows, out, "sink.params.mode=overwrite", "+predictor.params.fail_ids=[7]")
    assert "old" in pq.read_table(out).column_names
    assert manifest(out)["rows_out"] == N


def test_overwrite_replaces_the_output_when_the_job_succeeds(ray_session, rows, tmp_path):
    out = tmp_path / "out"
    job(rows, out, "+predictor.params.output_column=old")
    job(rows, out, "sink.params.mode=overwrite", "+predictor.params.output_column=new")
    table = pq.read_table(out)
    assert "new" in table.column_names and "old" not in table.column_names
    assert table.num_rows == N
    assert not Path(str(out) + STAGING_SUFFIX).exists()


def test_mode_error_refuses_an_existing_output(ray_session, rows, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as caught:
        job(rows, out)
    assert caught.value.key == "sink.params.path"
    assert "output already exists" in caught.value.message


def test_a_failed_multi_stage_job_keeps_what_it_wrote_and_resume_finishes_it(ray_session, tmp_path):
    """items -> task stage -> actor stage -> JSON lines, in work units of 8 rows; a transient
    outage from row 24 on fails the job, then the same config resumes where it stopped: the
    rows written before the failure are not run again."""
    out, log_dir, outage = tmp_path / "out", tmp_path / "log", tmp_path / "outage"
    outage.touch()
    items = "[" + ",".join(f"{{id: {i}}}" for i in range(N)) + "]"
    overrides = [
        "source=items",
        f"source.params.items={items}",
        "run.unit_rows=8",
        "+preprocessors=[{type: kit_step, params: {output_column: pre}}]",
        "predictor.type=kit_step",
        f"+predictor.params.log_dir={log_dir}",
        f"+predictor.params.outage_file={outage}",
        "+predictor.params.outage_from_id=24",
        "sink=json",
        f"sink.params.path={out}",
        "run.progress=false",
    ]
    with pytest.raises(BulkInferError) as caught:
        run_with_overrides(overrides)
    assert "ConnectionError: service unavailable" in caught.value.message
    assert_nothing_published(out, caught.value)
    done = written_ids(Path(str(out) + STAGING_SUFFIX), 8)
    assert not done & set(range(24, N)), "no row at or after the outage was written"
    logged_before = {p: p.read_text() for p in log_dir.glob("ids-*.txt")}

    outage.unlink()
    result = run_with_overrides([*overrides, "run.resume=true"])
    assert result.rows_resumed == len(done)
    rows = [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.open()]
    assert sorted(r["id"] for r in rows) == list(range(N))
    assert all(r["out"] == r["pre"] == r["id"] * 10 for r in rows)
    assert (manifest(out)["rows_in"], manifest(out)["rows_out"]) == (N, N)
    redone = set()
    for log in log_dir.glob("ids-*.txt"):
        text = log.read_text()[len(logged_before.get(log, "")) :]
        redone |= {int(i) for i in text.split()}
    assert redone == set(range(N)) - done, "only the rows no record held ran again"


def test_a_sources_decoder_runs_under_the_source_stages_error_policy(ray_session, tmp_path):
    """Rows a source's decoder cannot decode go through ``source.stage.on_error``: named in
    the error by default, set aside as dead letters (stage ``source``) when asked."""
    lines = tmp_path / "lines.txt"
    lines.write_text("1:one\n2:two\nbroken line\n4:four\n")
    base = [
        "source.type=kit_lines",
        f"source.params.path={lines}",
        "~predictor",
        "sink=parquet",
        "run.progress=false",
    ]
    with pytest.raises(BulkInferError) as caught:
        run_with_overrides([*base, f"sink.params.path={tmp_path / 'failed'}"])
    assert caught.value.key == "source"
    assert "not an 'id:text' line: 'broken line'" in caught.value.message
    assert "source.stage.on_error=skip or dead_letter" in caught.value.message

    out = tmp_path / "out"
    result = run_with_overrides(
        [
            *base,
            "source.stage.on_error=dead_letter",
            "source.stage.max_error_rate=0.5",
            f"sink.params.path={out}",
        ]
    )
    assert (result.rows_in, result.rows_out, result.rows_set_aside) == (4, 3, 1)
    assert sorted(pq.read_table(out).column("id").to_pylist()) == [1, 2, 4]
    (letter,) = dead_letters(out)
    assert (letter["stage"], letter["row"]) == ("source", {"line": "broken line"})


def test_a_source_without_a_decoder_takes_no_stage_block(tmp_path):
    from pipeline.contract.errors import PlanError

    with pytest.raises(PlanError, match="runs no map stage and takes no 'stage' block"):
        run_with_overrides(
            ["source=items", "source.stage.on_error=skip", f"sink.params.path={tmp_path}/o"]
        )
