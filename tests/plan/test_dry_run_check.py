"""``run.dry_run=true`` as another team's CI check: exit 0 valid, 2 invalid, and never Ray.

Each case runs the real command line in a subprocess through a small wrapper that reports, after
the command finished, whether anything imported Ray (or torch) into the process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

WRAPPER = textwrap.dedent(
    """
    import runpy, sys
    sys.argv = ["pipeline", *sys.argv[1:]]
    code = 0
    try:
        runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "torch", "transformers"})
    print("HEAVY_MODULES", heavy)
    sys.exit(code)
    """
)


def check(tmp_path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m pipeline OVERRIDES run.dry_run=true``, outputs under ``tmp_path``."""
    import os

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            WRAPPER,
            *overrides,
            "run.dry_run=true",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "HEAVY_MODULES []" in result.stdout, result.stdout + result.stderr
    return result


def test_a_valid_config_exits_0_with_the_plan_and_imports_no_ray(tmp_path):
    result = check(tmp_path, f"sink.params.path={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("bulkinfer plan 'bulkinfer'")
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_a_cluster_config_is_checked_without_connecting(tmp_path):
    result = check(tmp_path, "ray=cluster")
    assert result.returncode == 0, result.stderr
    assert "ray: auto" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["predictor.stage.batch_size=0"], "bulkinfer: error: predictor.stage.batch_size:"),
        (["+predictor.params.colour=red"], "bulkinfer: error: predictor.params.colour: unknown"),
        (["predictor.type=sentence_embeding"], "Did you mean 'sentence_embedding'?"),
        (
            ["predictor.stage.concurrency=2", "predictor.stage.num_cpus=1", "ray.num_cpus=2"],
            "leave no CPU for reading and writing",
        ),
        (
            ["sink=show", "predictor.stage.on_error=dead_letter"],
            "predictor.stage.on_error: dead_letter writes failing rows to <output>/_errors/",
        ),
        (
            ["+experiment=quickstart_gpu", "predictor.params.model=/nowhere"],
            "predictor.stage.num_gpus: asks for 1 GPU per worker x 2 worker(s), but the local "
            "machine has 0 GPUs",
        ),
        (["sink=csv"], "sink: column 'embedding' is fixed_size_list<float32>[384]"),
        (
            ["preprocessors=[{type: filter, params: {condition: 'len(id) > 2'}}]"],
            "preprocessors[0].params.condition: condition 'len(id) > 2' does not fit the data",
        ),
        (
            ["source=parquet", f"source.params.path={ROOT / 'README.md'}"],
            f"source.params.path: cannot read input file {ROOT / 'README.md'} (ArrowInvalid: "
            "Parquet magic bytes not found",
        ),
        (
            ["predictor.params.model=./models/minlm"],
            "bulkinfer: error: predictor.params.model: model folder './models/minlm' does not "
            "exist.",
        ),
    ],
    ids=[
        "bad-value",
        "unknown-key",
        "unknown-plugin",
        "unschedulable",
        "dead-letter-without-files",
        "gpus-this-machine-lacks",
        "a-column-the-sink-cannot-hold",
        "a-condition-of-the-wrong-type",
        "a-file-that-is-not-parquet",
        "a-model-folder-that-does-not-exist",
    ],
)
def test_an_invalid_config_exits_2_with_the_message_and_imports_no_ray(
    tmp_path, overrides, message
):
    result = check(tmp_path, *overrides, env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("predictor=no_such_option", "Could not find 'predictor/no_such_option'"),
        ("predictor.params.colour=red", "predictor.params.colour: unknown key; allowed keys:"),
        ("sink=lanse", "Did you mean 'lance'? Available: csv, iceberg, json, lance,"),
        ("predictor.stage.batch_size=[", "no viable alternative"),
        ("predictor.params.model=a: {b}", "mismatched input '{'"),
    ],
    ids=[
        "unknown-option",
        "override-of-missing-key",
        "option-typo",
        "malformed-override",
        "value-to-quote",
    ],
)
def test_hydra_config_errors_are_one_line_and_exit_2_too(tmp_path, override, message):
    result = check(tmp_path, override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bulkinfer: error: "), result.stderr
    assert message in lines[0]
