"""Every bulkinfer error kind, raised wherever a plugin's code runs, reaches the user as itself.

A job ``kit_rows -> kit_step (tasks) [-> kit_step (actor pool)] -> kit_files`` (the test plugin
package, tests/plugin_kit) raises a chosen error in one place: the source's read task
(``read_unit``), the preprocessor's map task, the predictor's actor (the job has one only
then), or the sink's write task.
The error the job fails with is of the class raised (a plain ``ValueError`` becomes the one
bulkinfer error that names the place), its key is absolute (``params.x`` raised by the predictor
is ``predictor.params.x``), and nothing is published where the output belongs. On the command
line the same failure is one ``bulkinfer: error: <key>: ...`` line on stderr, the kind's exit
status and no traceback.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import run_cli
from kit import install_kit, kit_env

from pipeline.contract import errors
from pipeline.contract.errors import BulkInferError, DataError, OutputError
from pipeline.execute.guard import StageFailedError
from pipeline.output.staging import STAGING_SUFFIX

#: place -> (the config block that raises, what the kit's message says it raised in).
PLACES = {
    "read task": ("source", "KitRows's read of rows-"),
    "map task": ("preprocessors[0]", "KitPreprocessor's batch"),
    "actor pool": ("predictor", "KitPredictor's batch"),
    "write task": ("sink", "KitFiles's write task"),
}

#: place -> (class, key, text) a plain ValueError raised there becomes.
PLAIN = {
    "read task": (DataError, "source", "failed reading work unit"),
    "map task": (StageFailedError, "preprocessors[0]", "stage 'kit_step' failed on a batch"),
    "actor pool": (StageFailedError, "predictor", "stage 'kit_step' failed on a batch"),
    "write task": (OutputError, "sink.params.path", "writing into"),
}

#: bulkinfer's error kinds (every BulkInferError class of pipeline.contract.errors but the
#: base), the kit's own (a constructor of its own) and a plain ValueError.
KINDS = [
    *sorted(
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, BulkInferError)
        and value is not BulkInferError
    ),
    "KitError",
    "ValueError",
]

#: Raised without a key: the error names the block that raised it.
KEYLESS = "ConfigError"

#: The kinds that take ways of their own through the core: no key, a class of the plugin's
#: own, no bulkinfer error at all, the kinds a staged job or the command line treat apart.
DISTINCT = [KEYLESS, "KitError", "ValueError", "EmptyInputError", "Interrupted", "OutputError"]

#: (place, kind) of each in-process job (about 3 s each, an actor pool's 10 s): every kind in
#: the read and the write task, the distinct ones in a map task, the first three in an actor.
MATRIX = [
    *((place, kind) for place in ("read task", "write task") for kind in KINDS),
    *(("map task", kind) for kind in DISTINCT),
    *(("actor pool", kind) for kind in DISTINCT[:3]),
]


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # before ray_session starts Ray, so its workers import the kit too


def config(out: Path, place: str, kind: str, **extra) -> dict:
    """The job's config, raising ``kind`` (keyed ``params.x``, but :data:`KEYLESS`) in
    ``place``; ``extra``: more params of the block that raises."""
    blocks = {
        "source": {"type": "kit_rows", "params": {"rows": 8, "units": 2}},
        "preprocessors[0]": {"type": "kit_step", "params": {"output_column": "pre"}},
        "predictor": {"type": "kit_step", "params": {}},
        "sink": {"type": "kit_files", "params": {"path": str(out)}},
    }
    raising = blocks[PLACES[place][0]]["params"]
    raising.update(raise_error=kind, **extra)
    if kind != KEYLESS:
        raising["raise_key"] = "params.x"
    job = {
        "source": blocks["source"],
        "preprocessors": [blocks["preprocessors[0]"]],
        "sink": blocks["sink"],
        "run": {"progress": "off"},
    }
    if place == "actor pool":  # an actor pool costs seconds to start: only where it raises
        job["predictor"] = blocks["predictor"]
    return job


def overrides(out: Path, place: str, kind: str) -> list[str]:
    """The same job on the command line (raising ``kind`` keyed ``params.x`` in ``place``)."""
    block = PLACES[place][0]
    raising = f"raise_error: {kind}, raise_key: params.x"
    pre = f"output_column: pre, {raising}" if place == "map task" else "output_column: pre"
    args = [
        "source.type=kit_rows",
        "~source.params.path",
        "source.params.rows=8",
        f"+preprocessors=[{{type: kit_step, params: {{{pre}}}}}]",
        "predictor.type=kit_step" if place == "actor pool" else "~predictor",
        "sink.type=kit_files",
        f"sink.params.path={out}",
        "run.progress=false",
        "ray.num_cpus=2",
    ]
    if place != "map task":  # a list item has no key of its own on the command line
        args += [f"{block}.params.raise_error={kind}", f"{block}.params.raise_key=params.x"]
    return args


def expected(place: str, kind: str) -> tuple[type, str, str]:
    """(class, absolute key, text of the message) of the error ``kind`` raised in ``place``."""
    if kind == "ValueError":
        return PLAIN[place]
    block, where = PLACES[place]
    if kind == KEYLESS:
        absolute = "sink" if block == "sink" else f"{block}.params"
    else:
        absolute = f"{block}.params.x"
    if kind == "KitError":
        from bulkinfer_testkit import KitError  # importable once the kit is installed

        return KitError, absolute, "the kit refused 3 rows"
    return getattr(errors, kind), absolute, f"kit raised {kind} in {where}"


def assert_nothing_published(out: Path, error: BulkInferError) -> None:
    """Nothing at the output path; a staging folder only where the message says it is kept."""
    assert not out.exists()
    staging = Path(str(out) + STAGING_SUFFIX)
    if staging.exists():
        assert "is kept in" in error.message, error.message
    else:
        assert "is kept in" not in error.message, error.message


# -- on the command line: one line, the key, the exit status, no traceback ---------------------
# (first in the module: before its local Ray starts, so the processes have the CPUs)

CLI_CASES = [
    ("read task", "DataError"),
    ("map task", "ValueError"),
    ("actor pool", "KitError"),
    ("write task", "ValueError"),  # an OutputError: exit status 1
]


def ray_notice(line: str) -> bool:
    """One of the lines Ray prints that are no error of the job (docs/metrics.md, "What a
    terminal still shows of Ray"): its note on token authentication, and the core worker's line
    per actor of a pool."""
    return "Token authentication is enabled" in line or (
        "core_worker.cc" in line and "has constructor arguments in the object store" in line
    )


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Each case of CLI_CASES run once, two at a time: case -> (output path, process)."""
    d = tmp_path_factory.mktemp("cli")

    def run(case):
        name = "-".join(case).replace(" ", "_")
        out = d / "out" / name
        args = [*overrides(out, *case), f"hydra.run.dir={d / 'runs' / name}"]
        return case, out, run_cli(*args, env=kit_env(), timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {case: (out, proc) for case, out, proc in pool.map(run, CLI_CASES)}


@pytest.mark.subprocess
@pytest.mark.parametrize("place,kind", CLI_CASES, ids=["-".join(c) for c in CLI_CASES])
def test_the_command_line_prints_one_line_and_exits_with_the_kinds_status(cli_runs, place, kind):
    out, proc = cli_runs[(place, kind)]
    cls, key, text = expected(place, kind)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not ray_notice(line)]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"bulkinfer: error: {key}: "), lines[0]
    assert text in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == cls.exit_code, proc.stderr[-3000:]
    assert not out.exists()
    assert not Path(str(out) + STAGING_SUFFIX).exists()


# -- in this process: every kind, in each place ------------------------------------------------


@pytest.mark.parametrize("place,kind", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_every_kind_raised_anywhere_fails_the_job_as_itself_with_its_absolute_key(
    ray_session, tmp_path, place, kind
):
    from pipeline.execute.runner import run_job

    out = tmp_path / "out"
    cls, key, text = expected(place, kind)
    with pytest.raises(BulkInferError) as caught:
        run_job(config(out, place, kind))
    error = caught.value
    assert type(error) is cls, (type(error), error)
    assert error.key == key, error
    assert text in error.message, error.message
    assert str(error).startswith(f"{key}: ")
    assert "\n" not in str(error)
    assert_nothing_published(out, error)


#: A task stage builds its plugin on its first batch (an error then is the batch's), an actor
#: pool's actors when they start: what they raise there reaches the driver only as text.
STARTS = [("actor pool", "KitError"), ("actor pool", "ValueError")]


@pytest.mark.parametrize("place,kind", STARTS, ids=["-".join(c) for c in STARTS])
def test_an_error_raised_while_a_worker_builds_the_stage_names_the_stage(
    ray_session, tmp_path, place, kind
):
    """The ledger hands the error over as it was raised."""
    from pipeline.execute.runner import run_job

    out = tmp_path / "out"
    cls, key, text = expected(place, kind)
    if kind == "ValueError":
        text = "stage 'kit_step' failed to start: ValueError: kit raised ValueError"
    with pytest.raises(BulkInferError) as caught:
        run_job(config(out, place, kind, raise_at_start=True))
    error = caught.value
    assert type(error) is cls, (type(error), error)
    assert error.key == key, error
    assert text in error.message, error.message
    assert_nothing_published(out, error)
