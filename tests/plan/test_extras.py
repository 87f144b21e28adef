"""A plugin whose extra is not installed is one line with the pip command, at plan time and in
``bulkinfer-plugins list`` alike, never an import error at run time.

The missing extras are real: each case runs the command line in a fresh interpreter whose import
system refuses the extra's modules, as an environment without them would (``pip install
bulkinfer`` without ``[embeddings]``, ``[lance]`` or ``[sql]``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import metadata

import pytest
from conftest import ROOT

from pipeline.plan import registry

#: Makes the top-level modules named in $HIDDEN_MODULES (and their submodules) fail to import,
#: then runs ``bulkinfer`` (argv[1] == "run") or ``bulkinfer-plugins`` with the other arguments.
WRAPPER = textwrap.dedent(
    """
    import importlib.abc, os, runpy, sys

    HIDDEN = set(os.environ["HIDDEN_MODULES"].split(","))

    class Hidden(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hidden())
    program, *args = sys.argv[1:]
    if program == "run":
        sys.argv = ["bulkinfer", *args]
        runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
    else:
        from pipeline.app.plugin_cli import main
        sys.exit(main(args))
    """
)


def without(modules: list[str], *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        cwd=cwd,
        env={**os.environ, "HIDDEN_MODULES": ",".join(modules), "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.subprocess
def test_the_wrapper_really_hides_a_module():
    check = subprocess.run(
        [sys.executable, "-c", WRAPPER.replace("program, *args", "import lance\nprogram, *args")],
        env={**os.environ, "HIDDEN_MODULES": "lance"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "No module named 'lance'" in check.stderr


@pytest.mark.subprocess
def test_plugins_list_names_the_extra_each_plugin_lacks():
    done = without(["torch", "lance", "sqlalchemy", "pyiceberg"], "plugins", "list")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert "MISSING EXTRA" in rows["sentence_embedding"]
    assert "pip install 'bulkinfer[embeddings]'" in rows["sentence_embedding"]
    assert "pip install 'bulkinfer[torch]'" in rows["torch_module"]
    assert "pip install 'bulkinfer[transformers]'" in rows["image_classification"]
    assert "(module torch is not installed)" in rows["image_classification"]
    assert "pip install 'bulkinfer[lance]'" in rows["lance"]
    assert "pip install 'bulkinfer[sql]'" in rows["sql"]  # importable without SQLAlchemy now
    assert "pip install 'bulkinfer[iceberg]'" in rows["iceberg"]
    for fine in ("parquet", "xgboost", "tokenize", "show", "openai_chat"):
        assert "MISSING EXTRA" not in rows[fine] and "BROKEN" not in rows[fine], rows[fine]
    assert "BROKEN" not in done.stdout


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("hidden", "overrides", "line"),
    [
        (
            ["torch"],
            [],
            "predictor.type: predictor plugin 'sentence_embedding' needs the extra 'embeddings' "
            "of bulkinfer (module torch is not installed): pip install 'bulkinfer[embeddings]'",
        ),
        (
            ["lance"],
            ["sink=lance", "sink.params.path=out/items.lance"],
            "sink.type: sink plugin 'lance' needs the extra 'lance' of bulkinfer (module lance "
            "is not installed): pip install 'bulkinfer[lance]'",
        ),
        (
            ["sqlalchemy"],
            ["sink=sql", "sink.params.url=sqlite:///out/items.db", "sink.params.table=items"],
            "sink.type: sink plugin 'sql' needs the extra 'sql' of bulkinfer (module sqlalchemy "
            "is not installed): pip install 'bulkinfer[sql]'",
        ),
        (
            ["psycopg"],
            [
                "sink=sql",
                "sink.params.url=postgresql+psycopg://bulkinfer@127.0.0.1:1/ml",
                "sink.params.table=items",
            ],
            "sink.params.url: postgresql+psycopg needs the module psycopg, which is not "
            "installed: pip install 'bulkinfer[sql]'",
        ),
        (
            ["onnxruntime"],
            ["predictor.params.backend=onnx"],
            "predictor.params.backend: backend 'onnx' needs the extra 'onnx' of bulkinfer "
            "(module onnxruntime is not installed): pip install 'bulkinfer[onnx]', or set "
            "predictor.params.backend=auto or torch",
        ),
        (
            ["openvino", "onnx"],
            ["predictor.params.backend=openvino"],
            "predictor.params.backend: backend 'openvino' needs the extra 'openvino' of "
            "bulkinfer (modules openvino, onnx are not installed): pip install "
            "'bulkinfer[openvino]', or set predictor.params.backend=auto or torch",
        ),
    ],
    ids=["embeddings", "lance", "sql", "postgresql-driver", "onnx-backend", "openvino-backend"],
)
def test_a_dry_run_refuses_a_missing_extra_in_one_line(tmp_path, hidden, overrides, line):
    done = without(
        hidden,
        "run",
        *overrides,
        "run.dry_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == f"bulkinfer: error: {line}"
    assert not (tmp_path / "out").exists()


#: What ``pip install 'bulkinfer[embeddings]'`` leaves out of the embedding backends.
NO_RUNTIMES = ["onnxruntime", "openvino", "onnx"]


@pytest.mark.subprocess
def test_the_default_dry_run_with_embeddings_alone_says_auto_runs_torch(tmp_path):
    """The driver's view (the hook hides modules in this process only; a job's Ray workers
    would still find them: tests/packaging/test_wheel.py runs the job in an environment
    without them)."""
    done = without(
        NO_RUNTIMES, "run", "run.dry_run=true", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backend auto -> torch: only torch is installed" in done.stdout


def test_every_extra_a_builtin_plugin_names_is_an_extra_of_the_package():
    declared = set(metadata("bulkinfer").get_all("Provides-Extra") or [])
    named = {
        (kind, name, extra)
        for kind in registry.KINDS
        for name, info in registry.available(kind).items()
        if info.distribution == "bulkinfer"
        for extra in registry.load(kind, name, require_extras=False).extras
    }
    assert {extra for _, _, extra in named} <= declared, named
    assert ("sink", "lance", "lance") in named
