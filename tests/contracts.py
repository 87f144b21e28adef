"""Contract suites every predictor's and every staged sink's tests subclass: the same promises,
checked the same way (:class:`PredictorContract` here first, :class:`SinkContract` below).

A subclass names the plugin, its params (a fixture, since they often point at a model the test
built), the input rows and the documented type of each output column. The suite runs one real
job per class (items source -> the predictor -> Parquet sink on the module's local Ray) and
checks what every predictor promises: the row count is kept, the input columns come out
unchanged, each output column has its documented type, and a missing input column is refused
with its config key before any model loads.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contract.errors import ColumnNotFoundError


def run_job(
    predictor: dict[str, Any],
    rows: list[dict[str, Any]],
    out: Path,
    preprocessors: list[dict[str, Any]] | None = None,
):
    """Run ``items -> [preprocessors] -> predictor -> parquet`` on the connected Ray."""
    from pipeline.execute.runner import run_job

    config = {
        "source": {"type": "items", "params": {"items": rows}},
        "preprocessors": preprocessors or [],
        "predictor": predictor,
        "sink": {"type": "parquet", "params": {"path": str(out)}},
        "run": {"progress": False},
    }
    run_job(config)
    return pq.read_table(out)


def shown_rows(printed: str) -> list[dict[str, Any]]:
    """The rows the ``show`` sink printed (one Python dict literal a line), parsed back: a test
    compares values, not the quoting repr chose (a text holding ``'`` prints in double quotes)."""
    return [ast.literal_eval(line) for line in printed.splitlines() if line.startswith("{")]


def continues_its_prompt(row: dict[str, Any], column: str = "data") -> bool:
    """The quickstart prompts' one shown row: generated text continues its own prompt, read from
    ``column``."""
    prompt = row[column]
    return prompt in ("Complete this", "for me") and row["output"].startswith(prompt)


class PredictorContract:
    """Subclass with ``predictor``, ``output_types``, ``rows`` and a ``params`` fixture."""

    #: The predictor's entry-point name.
    predictor: ClassVar[str]
    #: Output column -> a check of its Arrow type, as the plugin documents it.
    output_types: ClassVar[dict[str, Callable[[pa.DataType], bool]]]
    #: Input rows; each has a unique "id".
    rows: ClassVar[list[dict[str, Any]]]
    #: The column the params read, dropped to test the missing-column error.
    input_column: ClassVar[str] = "text"
    #: Stage overrides for the job.
    stage: ClassVar[dict[str, Any]] = {"concurrency": 1}

    @pytest.fixture(scope="class")
    def params(self) -> dict[str, Any]:
        raise NotImplementedError("subclasses define the params fixture")

    @pytest.fixture(scope="class")
    def output(self, ray_session, params, tmp_path_factory) -> pa.Table:
        out = tmp_path_factory.mktemp("contract") / "out"
        job = {"type": self.predictor, "params": params, "stage": self.stage}
        return run_job(job, self.rows, out)

    def test_keeps_the_row_count(self, output):
        assert output.num_rows == len(self.rows)

    def test_keeps_the_input_columns_unchanged(self, output):
        by_id = {row["id"]: row for row in output.to_pylist()}
        assert sorted(by_id) == sorted(row["id"] for row in self.rows)
        for row in self.rows:
            for column, value in row.items():
                assert by_id[row["id"]][column] == value, column

    def test_output_columns_have_the_documented_types(self, output):
        for column, is_documented in self.output_types.items():
            assert column in output.column_names
            kind = output.schema.field(column).type
            assert is_documented(kind), f"{column}: {kind}"
            assert output.column(column).null_count == 0

    def test_missing_input_column_is_refused_with_its_key(self, ray_session, params, tmp_path):
        rows = [
            {k: v for k, v in row.items() if k != self.input_column} | {"other": 1}
            for row in self.rows
        ]
        job = {"type": self.predictor, "params": params, "stage": self.stage}
        with pytest.raises(ColumnNotFoundError) as error:
            run_job(job, rows, tmp_path / "out")
        assert error.value.key.startswith("predictor.params.")
        assert repr(self.input_column) in error.value.message
        assert not (tmp_path / "out").exists()


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def is_float(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind)


def is_vector(kind: pa.DataType, size: int | None = None, element=pa.types.is_float32) -> bool:
    """A fixed-size list of floats (``size`` elements when given)."""
    return (
        pa.types.is_fixed_size_list(kind)
        and element(kind.value_type)
        and (size is None or kind.list_size == size)
    )


# -- sinks ----------------------------------------------------------------------------------------


def hydra_value(value: Any) -> str:
    """A value as a Hydra command-line override writes it (strings quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def sink_overrides(sink: str, params: dict[str, Any]) -> list[str]:
    """``sink=NAME`` and one ``sink.params.KEY=VALUE`` override per param."""
    return [f"sink={sink}", *(f"sink.params.{k}={hydra_value(v)}" for k, v in params.items())]


def write_parquet_units(folder: Path, files: int, rows_per_file: int) -> list[int]:
    """``files`` Parquet files of ``rows_per_file`` rows (id, text) in ``folder``; the ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        ids = list(range(f * rows_per_file, (f + 1) * rows_per_file))
        pq.write_table(
            pa.table({"id": ids, "text": [f"row {i}" for i in ids]}), folder / f"{f:02d}.parquet"
        )
    return list(range(files * rows_per_file))


class SinkContract:
    """What every staged sink promises, on the real engine (subclass per sink).

    A subclass names the sink and implements :meth:`params` (a fresh target under a folder)
    and :meth:`read` (the rows a reader sees, None when there is no target). The suite runs real
    jobs on the module's Ray (and, for the kill test, the command line in its own process):
    an XGBoost job's rows read back equal, the modes keep their promises, a job that fails on
    its second work unit leaves the target as it was, and a job stopped at each of
    :attr:`kill_points` (its session SIGKILLed, or Ctrl-C) resumes without duplicates or redone
    rows, its counts in metrics.json.
    """

    #: The sink's entry-point name.
    sink: ClassVar[str]
    #: This sink's names for: refuse an existing output, add to it, replace it (None: no such
    #: mode).
    mode_error: ClassVar[str | None] = "error"
    mode_append: ClassVar[str | None] = "append"
    mode_replace: ClassVar[str | None] = "overwrite"
    #: The config key an existing output is refused with.
    error_key: ClassVar[str] = "sink.params.path"
    #: A credential the params name through an environment variable: never in any output.
    secret: ClassVar[str | None] = None

    def params(self, where: Path) -> dict[str, Any]:
        raise NotImplementedError

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        raise NotImplementedError

    def job_store(self, params: dict[str, Any]) -> Any:
        """The job store (:class:`~pipeline.contract.sink.JobStore`) of the target ``params``
        names: where its job record and its write tasks' records are kept."""
        from pipeline.output.tables import job_store
        from pipeline.plan import registry

        plugin = registry.load("sink", self.sink)
        return job_store(plugin().target(plugin.Params(**params)))

    def written(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The write tasks' records in the job store of the target ``params`` names."""
        return list(self.job_store(params).committed().values())

    def job_left(self, params: dict[str, Any]) -> bool:
        """Whether a job record is left in the job store of the target ``params`` names."""
        return self.job_store(params).load() is not None

    # -- helpers --
    def rows(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        table = self.read(params)
        return [] if table is None else sorted(table.to_pylist(), key=lambda r: r["id"])

    def job(self, params: dict[str, Any], source: dict[str, Any], **run: Any) -> Any:
        from pipeline.execute.runner import run_job

        config = {
            "source": source,
            "sink": {"type": self.sink, "params": params},
            "run": {"progress": False, **run},
        }
        return run_job(config)

    def items(self, ids: range) -> dict[str, Any]:
        return {"type": "items", "params": {"items": [{"id": i, "text": f"t{i}"} for i in ids]}}

    # -- the promises --
    def test_an_xgboost_job_writes_rows_that_read_back_equal(self, ray_session, tmp_path):
        import xgboost

        from pipeline.app.metrics import JobInfo, Recorder
        from pipeline.execute.runner import run_job
        from plugins.predictors.xgboost_train import LABEL, breast_cancer_frames

        train, valid = breast_cancer_frames()
        features = [c for c in train.columns if c != LABEL]
        booster = xgboost.train(
            {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
            xgboost.DMatrix(train[features], label=train[LABEL]),
            num_boost_round=5,
        )
        booster.save_model(tmp_path / "model.ubj")
        data = valid[features].head(40).reset_index(drop=True)
        data.insert(0, "id", range(len(data)))
        inp = tmp_path / "in"
        inp.mkdir()
        for part, half in enumerate((data.iloc[:20], data.iloc[20:])):
            table = pa.Table.from_pandas(half, preserve_index=False)
            pq.write_table(table, inp / f"{part}.parquet")
        params = self.params(tmp_path)  # no column_types: the booster tells the type
        config = {
            "source": {"type": "parquet", "params": {"path": str(inp)}},
            "predictor": {"type": "xgboost", "params": {"model": str(tmp_path / "model.ubj")}},
            "sink": {"type": self.sink, "params": params},
            "run": {"progress": False, "unit_bytes": 1},
        }
        recorder = Recorder(JobInfo(output_dir=str(tmp_path / "run")))
        result = run_job(config, recorder=recorder)
        metrics = recorder.completed(result)

        matrix = data[features].to_numpy(np.float32)
        expected = booster.predict(xgboost.DMatrix(matrix, feature_names=features))
        got = self.rows(params)
        assert [r["id"] for r in got] == list(range(40)), "every row once"
        for row, want, prediction in zip(got, data.to_dict("records"), expected, strict=True):
            assert {c: row[c] for c in data.columns} == want
            # float32 as stored (PostgreSQL's driver reads a real as its shortest decimal)
            assert np.float32(row["predictions"]) == prediction
        assert (metrics["rows_in"], metrics["rows_out"]) == (40, 40)
        assert metrics["output"] == result.output
        saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert (saved["rows_in"], saved["rows_out"]) == (40, 40)

    def test_the_modes_replace_refuse_and_add_to_a_target(self, ray_session, tmp_path):
        """One target through the modes: replace makes it when there is none; the mode that
        refuses an existing target does so before any work, naming its key, and keeps it as it
        was; append adds a job's rows, and the same job resumed after that (as after a kill
        between its commit and its end) is refused instead of appending them again, where the
        target keeps its last job; replace keeps only the rows of its own job."""
        from pipeline.contract.errors import DataError

        params = self.params(tmp_path)
        self.job({**params, "mode": self.mode_replace}, self.items(range(5)))
        assert [r["id"] for r in self.rows(params)] == list(range(5))
        if self.mode_error is not None:
            with pytest.raises(DataError) as caught:
                self.job({**params, "mode": self.mode_error}, self.items(range(5, 9)))
            assert caught.value.key == self.error_key
            assert [r["id"] for r in self.rows(params)] == list(range(5))
        result = self.job({**params, "mode": self.mode_append}, self.items(range(5, 9)))
        assert result.rows_done == 4
        assert [r["id"] for r in self.rows(params)] == list(range(9))
        if self.keeps_its_last_job:  # the same job resumed: it is published, nothing to do
            with pytest.raises(DataError, match="nothing to resume") as again:
                self.job({**params, "mode": self.mode_append}, self.items(range(5, 9)), resume=True)
            assert again.value.key == "run.resume"
            assert [r["id"] for r in self.rows(params)] == list(range(9))
        self.job({**params, "mode": self.mode_replace}, self.items(range(9, 12)))
        assert [r["id"] for r in self.rows(params)] == list(range(9, 12))

    @pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
    def test_a_job_failing_on_its_second_unit_leaves_the_target_as_it_was(
        self, ray_session, tmp_path, existing
    ):
        from pipeline.contract.errors import DataError

        params = {**self.params(tmp_path), "mode": self.mode_append}
        if existing:
            self.job(params, self.items(range(100, 103)))
        before = self.rows(params)
        inp = tmp_path / "in"
        write_parquet_units(inp, 1, 5)
        (inp / "01.parquet").write_bytes(b"this is not a Parquet file")
        source = {"type": "parquet", "params": {"path": str(inp)}}
        with pytest.raises(DataError) as caught:
            self.job(params, source, unit_bytes=1)
        assert "01.parquet" in caught.value.message
        assert self.rows(params) == before
        if self.written(params):  # rows of the first file written before the failure: kept
            assert "run.resume=true" in caught.value.message
        else:
            assert "is kept in" not in caught.value.message

    #: Where the kill test stops the job, in order, each run resuming the one before: a halt
    #: point of :mod:`pipeline.contract.halts`, where the job's whole session is SIGKILLed
    #: (``written``: a write task wrote its rows and has no record yet; ``recorded``: half way,
    #: a write task recorded its rows; ``renaming``: a file output's publish moved one file of
    #: several; ``publishing``: every part recorded, the job's state ``publishing``, nothing at
    #: the destination; ``committing``: inside a table target's one commit, not made;
    #: ``committed``: a table's commit made, its job record not yet dropped);
    #: or ``ctrl-c:<point>``, where Ctrl-C is pressed instead (SIGINT to the job's process
    #: group, as a terminal sends it: the job ends with one line, status 130 and metrics.json
    #: ``interrupted``), ``ctrl-c-twice:<point>`` (a second SIGINT while it stops ends the
    #: process at once, status 130) and ``sigterm:<point>`` (SIGTERM to the process group, as a
    #: scheduler stops a job, its Ray's processes too: the same as one Ctrl-C).
    kill_points: ClassVar[tuple[str, ...]] = ("recorded", "ctrl-c:recorded", "publishing")
    #: Whether the kill test's input is one Parquet file (one work unit, resumed mid-file)
    #: instead of a unit per file.
    one_file: ClassVar[bool] = False
    #: After the first stop that leaves records, also check that the command line refuses
    #: (:func:`check_refusals`, runs that end before Ray starts): ``plain``, to run over them
    #: without ``run.resume``; ``changed``, to resume them with a changed config.
    refusals: ClassVar[tuple[str, ...]] = ()
    #: Whether the target keeps the job of its last commit (:meth:`StagedTarget.last_job`).
    keeps_its_last_job: ClassVar[bool] = True
    #: Text the finished run's output shows (e.g. the target's URL without its password).
    shows: ClassVar[str | None] = None

    def test_a_driver_killed_at_each_point_resumes_without_duplicates_or_redone_rows(
        self, tmp_path
    ):
        """Stop the job at each of :attr:`kill_points`, resuming each time, then finish it with
        ``run.resume=true``. After every stop nothing partial is visible at the destination and
        no record is lost; every run (re)runs only rows no record held when it started, and a
        run that got past its last write ran exactly those (what was in flight, and what was
        not read yet), and a run that started with every row recorded started no stage
        worker; the output has every row exactly once, and no run shows the
        :attr:`secret` anywhere it prints or writes."""
        from conftest import run_cli
        from kit import kit_env

        from pipeline.contract.halts import HALT_ENV

        params = self.params(tmp_path)
        stops = [stop_of(point) for point in self.kill_points]
        # A unit per file (one batch of the stage: 4 rows), enough for a new record at every
        # ``recorded`` stop and rows left after it; or all of them in one file, one unit.
        files, per_file = 2 + 2 * sum(where == "recorded" for where, _ in stops), 4
        if self.one_file:
            files, per_file = 1, files * per_file
        ids = write_parquet_units(tmp_path / "in", files, per_file)
        log_dir = tmp_path / "ids"
        runs = tmp_path / "runs"  # each run's folder (metrics.json, .hydra/, the log)

        def args(run_dir: str, *extra: str) -> list[str]:
            return [
                "source=parquet",
                f"source.params.path={tmp_path / 'in'}",
                "run.unit_bytes=1",
                "predictor.type=kit_step",
                f"+predictor.params.log_dir={log_dir}",
                *sink_overrides(self.sink, params),
                "run.progress=false",
                "ray.num_cpus=2",
                f"hydra.run.dir={runs / run_dir}",
                *extra,
            ]

        printed: list[str] = []  # what the runs printed, for the secret
        done: set[int] = set()
        refusals = self.refusals
        for n, (point, (where, signals)) in enumerate(zip(self.kill_points, stops, strict=True)):
            run = args(f"run{n}", *(("run.resume=true",) if n else ()))
            logged_before = {p: p.read_text() for p in log_dir.glob("ids-*.txt")}
            started_before = set(log_dir.glob("init-*"))
            flag = tmp_path / f"halted-{n}-{where}"
            env = {**kit_env(), HALT_ENV: f"{where}:{flag}"}
            ready, what = flag.exists, f"the job reached halt point {where!r}"
            if signals:
                status, stderr = run_interrupted_when(run, ready, what, env, signals)
                printed.append(stderr)
                assert status == 130, f"{point}: {stderr}"
            else:
                run_killed_when(run, ready, what, env)
            ran = logged_ids(log_dir, logged_before)
            assert not ran & done, f"{point}: the run redid rows a record held"
            if done == set(ids):  # every row recorded before it: no stage worker started
                assert set(log_dir.glob("init-*")) == started_before, f"{point}: a stage ran"
            if where in ("renaming", "publishing", "committing", "committed"):  # past the writes
                assert ran == set(ids) - done, f"{point}: not exactly the unrecorded rows"
            if where == "committed":  # the commit is made: all of it, once
                assert [r["id"] for r in self.rows(params)] == ids
            else:
                assert self.read(params) is None, f"{point}: a stopped run published something"
            now = written_ids(self.written(params), per_file)
            assert done <= now, f"{point}: a record was lost"
            if where == "written":
                assert not now, "a write task killed before its record counts for nothing"
            elif where == "recorded":
                assert done < now, f"{point}: no new record"
                if not signals:  # SIGKILL stops every task at once (after Ctrl-C one may end)
                    assert now < set(ids), f"{point}: every row recorded before the kill"
            else:
                assert now == set(ids), f"{point}: every row is recorded before publishing"
            if len(signals) == 2:  # the second ends the process at once, with one more line
                assert "bulkinfer: stopped at once; run again with run.resume=true" in stderr
            if len(signals) == 1:  # what the line says is written: what the records hold
                low = len(done) + 1 if where == "recorded" else len(now)
                check_interrupted(stderr, runs / f"run{n}", (low, len(now)), len(ids))
                if not now:  # nothing written: nothing kept that would refuse a plain rerun
                    assert not self.job_left(params), f"{point}: a job record is left"
            done = now
            if refusals and done and where != "committed":
                printed += check_refusals(args, kit_env(), refusals)
                refusals = ()

        logged_before = {p: p.read_text() for p in log_dir.glob("ids-*.txt")}
        started_before = set(log_dir.glob("init-*"))
        resumed = run_cli(*args("last", "run.resume=true"), env=kit_env(), timeout=600)
        assert resumed.returncode == 0, resumed.stderr
        if done:
            assert f"resumed: {len(done)} rows were already written" in resumed.stdout
        if self.shows:
            assert self.shows in resumed.stdout
        redone = logged_ids(log_dir, logged_before)
        assert redone == set(ids) - done, "the resumed run ran exactly the unwritten rows"
        if done == set(ids):  # only the publish was left: no stage worker started
            assert set(log_dir.glob("init-*")) == started_before, "a stage ran for no rows"
        got = self.rows(params)
        assert [r["id"] for r in got] == ids, "every row exactly once"
        assert [r["out"] for r in got] == [i * 10 for i in ids]
        metrics = json.loads((runs / "last" / "metrics.json").read_text())
        assert (metrics["rows_in"], metrics["rows_out"]) == (len(ids), len(ids))
        assert not self.written(params), "the job record is gone"
        self.check_published(params, len(ids))
        if self.secret:
            printed += [resumed.stdout, resumed.stderr]
            assert not [text for text in printed if self.secret in text]
            written = [p for p in runs.rglob("*") if p.is_file()]
            assert not [p for p in written if self.secret.encode() in p.read_bytes()]

    def check_published(self, params: dict[str, Any], rows: int) -> None:
        """What the kind keeps beside a finished job's ``rows`` rows (a file output: its
        manifest); nothing to check by default."""


#: How a kill point stops the job: the signals sent to its process group, one after another
#: (none: its session is SIGKILLed).
STOPS = {
    "": (),
    "ctrl-c": (signal.SIGINT,),
    "ctrl-c-twice": (signal.SIGINT, signal.SIGINT),
    "sigterm": (signal.SIGTERM,),
}


def stop_of(point: str) -> tuple[str, tuple[int, ...]]:
    """A kill point of :attr:`SinkContract.kill_points` as (its halt point, the signals sent
    there: :data:`STOPS`)."""
    how, _, where = point.rpartition(":")
    return where, STOPS[how]


def check_interrupted(
    stderr: str, run_dir: Path, recorded: tuple[int, int], rows_total: int
) -> None:
    """A job stopped by one Ctrl-C ended with one line saying how many rows are written
    (within ``recorded``, both included) and how to finish (with none recorded: that nothing
    is kept), no traceback, and ``metrics.json`` in ``run_dir`` says ``interrupted``."""
    lines = [line for line in stderr.splitlines() if line.startswith("bulkinfer:")]
    assert len(lines) == 1, stderr
    then = (
        "run again with run.resume=true to finish"
        if recorded[1]
        else "nothing is kept: run the job again to start it"
    )
    end = f" of {rows_total} rows written; {then}"
    assert lines[0].startswith("bulkinfer: interrupted: ") and lines[0].endswith(end), lines[0]
    rows = int(lines[0].removeprefix("bulkinfer: interrupted: ").removesuffix(end).replace(",", ""))
    assert recorded[0] <= rows <= recorded[1], lines[0]
    assert "Traceback" not in stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert metrics["error"] == lines[0].removeprefix("bulkinfer: ")
    assert (metrics["rows_written"], metrics["rows_total"]) == (rows, rows_total)


def check_refusals(
    args: Callable[..., list[str]], env: dict[str, str], which: tuple[str, ...]
) -> list[str]:
    """With a stopped job's records in place, the command line (``args(run_dir, *extra)``)
    refuses, in one line naming what to do and without a traceback: ``plain``, to run without
    ``run.resume``; ``changed``, to resume with a changed predictor param (naming the change).
    Returns what the runs printed."""
    from conftest import run_cli

    printed = []
    if "plain" in which:
        plain = run_cli(*args("refused"), env=env, timeout=300)
        assert plain.returncode == 2, plain.stderr
        assert "run.resume: an unfinished run of this job left its work" in plain.stderr
        assert "Traceback" not in plain.stderr
        printed += [plain.stdout, plain.stderr]
    if "changed" in which:
        changed = run_cli(
            *args("changed", "+predictor.params.output_column=other", "run.resume=true"),
            env=env,
            timeout=300,
        )
        assert changed.returncode == 2, changed.stderr
        assert "cannot resume: the config changed" in changed.stderr
        assert 'predictor.params.output_column: "out" -> "other"' in changed.stderr
        assert "Traceback" not in changed.stderr
        printed += [changed.stdout, changed.stderr]
    return printed


def written_ids(records: list[dict[str, Any]], rows_per_unit: int) -> set[int]:
    """The ``id`` of each row the write tasks' records hold, for inputs of one unit per file
    of ``rows_per_unit`` rows with ids 0, 1, ... (row id ``u << 40 | i`` is id
    ``u * rows_per_unit + i``)."""
    from pipeline.output.progress import UNIT_SHIFT

    done = set()
    for record in records:
        for start, stop in record["ranges"]:
            for row in range(start, stop):
                done.add((row >> UNIT_SHIFT) * rows_per_unit + (row & ((1 << UNIT_SHIFT) - 1)))
    return done


def logged_ids(folder: Path, before: dict[Path, str]) -> set[int]:
    """The ids the kit's stage logged (``log_dir``) since ``before`` (each log's text then)."""
    ids = set()
    for log in folder.glob("ids-*.txt"):
        ids |= {int(i) for i in log.read_text()[len(before.get(log, "")) :].split()}
    return ids


def session_pids(sid: int) -> list[int]:
    """Processes of a session (a CLI started with ``start_new_session`` and its local Ray)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after ")": state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def start_session(
    args: list[str], env: dict[str, str] | None = None, capture: bool = False
) -> subprocess.Popen:
    """``python -m pipeline ARGS`` in a process session of its own (so a test can stop exactly
    its processes: the driver and the local Ray it starts); ``capture``: pipe its output as
    text (else it is dropped)."""
    from conftest import ROOT

    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
        stdout=out,
        stderr=out,
        text=capture,
        start_new_session=True,
    )


def wait_for(
    driver: subprocess.Popen, ready: Callable[[], object], what: str, timeout_s: float = 240
) -> None:
    """Poll ``ready()`` every 0.05 s until it is true; fail if the job ended first or after
    ``timeout_s`` seconds (``what`` says what was awaited)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert driver.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.05)


def run_killed_when(
    args: list[str],
    ready: Callable[[], object],
    what: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 240,
) -> None:
    """Start the command line (:func:`start_session`), wait until ``ready()``
    (:func:`wait_for`) and SIGKILL every process of its session; fails unless the driver died
    of that SIGKILL."""
    driver = start_session(args, env)
    try:
        wait_for(driver, ready, what, timeout_s)
        kill_session(driver.pid)
        driver.wait(timeout=60)
    finally:
        kill_session(driver.pid)
    assert driver.returncode == -signal.SIGKILL


def run_interrupted_when(
    args: list[str],
    ready: Callable[[], object],
    what: str,
    env: dict[str, str] | None = None,
    signals: tuple[int, ...] = (signal.SIGINT,),
    timeout_s: float = 240,
) -> tuple[int, str]:
    """Start the command line in a process group of its own, as a terminal's foreground job
    (:func:`start_session`), wait until ``ready()`` (:func:`wait_for`) and send ``signals`` to
    the whole group, 0.2 s apart (Ctrl-C: SIGINT; a scheduler such as Slurm: SIGTERM); returns
    the exit status and what it printed on its error stream. Fails if any process of its
    session (its local Ray) outlives it by :data:`OUTLIVED_S` seconds; whatever is left is
    then SIGKILLed."""
    driver = start_session(args, env, capture=True)
    try:
        wait_for(driver, ready, what, timeout_s)
        for sig in signals:
            os.killpg(driver.pid, sig)
            time.sleep(0.2)
        _, stderr = driver.communicate(timeout=120)
        deadline = time.monotonic() + OUTLIVED_S
        while (left := session_pids(driver.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes outlived the stopped job: {_commands(left)}\n{stderr}"
    finally:
        kill_session(driver.pid)
    return driver.returncode, stderr


#: Seconds a stopped job's processes (its local Ray shutting down) may outlive its driver: the
#: wait ends as soon as they are gone (here within 5 s); the bound is for slow machines, what
#: it catches are processes that never go (Ray's agents after a second Ctrl-C did not).
OUTLIVED_S = 60


def _commands(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return names


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (by id, one by one)."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
