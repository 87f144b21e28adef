"""The plugin contract's version: a plugin built for another major version is refused with one
line naming its package, in a run, a dry run and ``bulkinfer-plugins list`` alike.

Each plugin package is a real distribution record (``*.dist-info``) with its module beside it in a
temporary folder on PYTHONPATH, as pip would leave them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, run_cli
from dists import env_with, write_dist

from pipeline.contract import PLUGIN_API
from pipeline.contract.errors import PluginLoadError
from pipeline.contract.plugin import api_version
from pipeline.plan import registry

MODULE = """
from pipeline.contract import Predictor


class Echo(Predictor):
    \"\"\"Returns its batches unchanged.\"\"\"

    {declared}

    @classmethod
    def output_schema(cls, params, schema):
        return schema

    def __call__(self, batch):
        return batch
"""


def package(root, name: str, declared: str | None):
    """Distribution ``name`` 0.1 registering predictor ``echo_<module>`` built for ``declared``."""
    module = name.replace("-", "_")
    line = f"plugin_api = {declared!r}" if declared is not None else ""
    return write_dist(
        root,
        name,
        {"bulkinfer.predictors": {f"echo_{module}": f"{module}:Echo"}},
        {f"{module}.py": textwrap.dedent(MODULE).replace("{declared}", line)},
    )


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Packages built for contract 2.0, for 1.0, for an unversioned one and for none said,
    visible to this process."""
    for name, declared in [
        ("future-plugins", "2.0"),
        ("old-plugins", "1.0"),
        ("odd-plugins", "one"),
        ("quiet-plugins", None),
    ]:
        package(tmp_path / name, name, declared)
        monkeypatch.syspath_prepend(str(tmp_path / name))
    registry.refresh()
    yield tmp_path
    monkeypatch.undo()
    registry.refresh()


def test_the_contract_version_is_major_dot_minor():
    assert api_version(PLUGIN_API) >= (1, 1)
    assert api_version("1") == (1, 0)
    with pytest.raises(ValueError, match="not a contract version"):
        api_version("1.x")


def test_a_plugin_built_for_another_major_version_is_refused_naming_its_package(installed):
    with pytest.raises(PluginLoadError) as caught:
        registry.load("predictor", "echo_future_plugins", key="predictor.type")
    error = caught.value
    assert error.key == "predictor.type"
    assert "predictor plugin 'echo_future_plugins' from future-plugins 0.1" in error.message
    assert "is built for plugin contract 2.0, but bulkinfer" in error.message
    assert f"provides {PLUGIN_API}" in error.message and "\n" not in error.message


def test_plugins_built_for_the_same_major_version_or_not_saying_load(installed):
    assert registry.load("predictor", "echo_old_plugins").plugin_api == "1.0"
    assert registry.load("predictor", "echo_quiet_plugins").plugin_api is None


def test_a_plugin_api_that_is_not_a_version_is_refused(installed):
    with pytest.raises(PluginLoadError, match="odd-plugins 0.1: plugin_api 'one' is not a"):
        registry.load("predictor", "echo_odd_plugins")


@pytest.mark.subprocess
def test_runs_dry_runs_and_the_plugin_list_refuse_it_alike(tmp_path):
    env = env_with(package(tmp_path, "future-plugins", "2.0"))
    expected = "predictor plugin 'echo_future_plugins' from future-plugins 0.1 is built for"
    out = str(tmp_path / "out")
    for extra in (["run.dry_run=true"], []):
        result = run_cli("predictor.type=echo_future_plugins", f"sink.params.path={out}", *extra,
                         env=env)  # fmt: skip
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bulkinfer: error: predictor.type: ")
        assert expected in lines[0] and "Traceback" not in result.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "pipeline.app.plugin_cli", "list"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    row = next(x for x in listed.stdout.splitlines() if x.strip().startswith("echo_future"))
    assert "future-plugins 0.1" in row and f"BROKEN: {expected}" in row


def test_describe_says_which_contract_a_third_partys_plugin_was_built_for(installed):
    from pipeline.app.plugin_cli import describe_lines

    old = describe_lines("echo_old_plugins")
    assert f"  built for plugin contract 1.0; bulkinfer provides {PLUGIN_API}" in old
    quiet = describe_lines("echo_quiet_plugins")
    assert any("built for plugin contract 1.0 (it does not say" in line for line in quiet)
