"""Config packages on Hydra's search path: clashes are reported, broken packages named.

Each test writes real distribution metadata (``bulkinfer.configs`` entry points) plus a package
of YAML files into a temporary folder and runs ``python -m pipeline`` with that folder on
PYTHONPATH; every job here is a dry run, so no Ray starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, run_cli
from dists import env_with, write_dist

GROUP = "bulkinfer.configs"
SHOW = "type: show\nparams: {limit: 3}\n"


def config_package(root, dist: str, module: str, files: dict[str, str], init: bool = True):
    """A YAML-only config package ``module`` registered by distribution ``dist``."""
    contents = {f"{module}/{path}": text for path, text in files.items()}
    if init:
        contents[f"{module}/__init__.py"] = ""
    return write_dist(root / dist, dist, {GROUP: {module: module}}, contents)


@pytest.fixture
def two_teams(tmp_path):
    """team-b and team-c both ship sink/teams/out.yaml; team-c also shadows built-in sink/show."""
    b = config_package(tmp_path, "team-b", "team_b_configs", {"sink/teams/out.yaml": SHOW})
    c = config_package(
        tmp_path,
        "team-c",
        "team_c_configs",
        {"sink/teams/out.yaml": SHOW, "sink/show.yaml": SHOW, "sink/team_c/only.yaml": SHOW},
    )
    return env_with(b, c)


def test_an_option_from_a_config_package_is_found_by_name(tmp_path):
    package = config_package(tmp_path, "team-b", "team_b_configs", {"sink/team_b/x.yaml": SHOW})
    result = run_cli("sink=team_b/x", "run.dry_run=true", env=env_with(package))
    assert result.returncode == 0, result.stderr
    assert "sink: sink 'show'" in result.stdout and '"limit": 3' in result.stdout
    assert "warning" not in result.stderr


def test_selecting_an_option_two_packages_provide_is_refused_naming_both(two_teams):
    result = run_cli("sink=teams/out", "run.dry_run=true", env=two_teams)
    assert result.returncode == 2
    error = result.stderr.splitlines()[-1]
    assert error.startswith("bulkinfer: error: sink: option 'teams/out' is ambiguous")
    assert "team-b [bulkinfer.configs:team_b_configs]" in error
    assert "team-c [bulkinfer.configs:team_c_configs]" in error
    assert "Traceback" not in result.stderr


def test_a_package_shadowing_a_builtin_option_is_refused_when_selected(two_teams):
    result = run_cli("sink=show", "run.dry_run=true", env=two_teams)
    assert result.returncode == 2
    says = "sink/show.yaml is provided by bulkinfer (built-in configs) and by team-c"
    assert says in result.stderr


def test_clashes_warn_but_do_not_stop_jobs_that_do_not_use_them(two_teams):
    result = run_cli("sink=team_c/only", "run.dry_run=true", env=two_teams)
    assert result.returncode == 0, result.stderr
    warnings = [x for x in result.stderr.splitlines() if x.startswith("bulkinfer: warning:")]
    assert len(warnings) == 2  # each clash once
    assert any("sink/teams/out.yaml is provided by team-b" in w for w in warnings)
    assert any("sink/show.yaml is provided by bulkinfer (built-in configs)" in w for w in warnings)


def test_a_clashing_preprocessor_named_in_the_list_is_refused(tmp_path):
    stage = "type: whatever\n"
    env = env_with(
        config_package(tmp_path, "team-b", "team_b_configs", {"preprocessor/clean.yaml": stage}),
        config_package(tmp_path, "team-c", "team_c_configs", {"preprocessor/clean.yaml": stage}),
    )
    result = run_cli("preprocessors=[clean]", "run.dry_run=true", env=env)
    assert result.returncode == 2
    assert "bulkinfer: error: preprocessors[0]: option 'clean' is ambiguous" in result.stderr


def test_in_process_runs_refuse_clashes_too(two_teams):
    script = textwrap.dedent(
        """
        from pipeline.app.main import run_with_overrides
        from pipeline.contract.errors import ConfigError
        try:
            run_with_overrides(["sink=teams/out", "run.dry_run=true"])
        except ConfigError as exc:
            print("refused:", exc.key)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, **two_teams},
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "refused: sink", result.stderr


def test_an_unimportable_config_package_is_named_and_the_rest_still_work(tmp_path):
    ghost = write_dist(tmp_path / "ghost", "ghost-configs", {GROUP: {"ghost": "no_such_pkg_xyz"}})
    bare = config_package(
        tmp_path, "bare-configs", "bare_configs", {"sink/bare/x.yaml": SHOW}, init=False
    )
    good = config_package(tmp_path, "team-b", "team_b_configs", {"sink/team_b/x.yaml": SHOW})
    result = run_cli("sink=team_b/x", "run.dry_run=true", env=env_with(ghost, bare, good))
    assert result.returncode == 0, result.stderr
    assert "ghost-configs [bulkinfer.configs:ghost]: cannot import 'no_such_pkg_xyz'" in (
        result.stderr
    )
    assert "'bare_configs' has no __init__.py" in result.stderr


def test_the_search_path_plugin_leaves_other_hydra_apps_alone(tmp_path):
    other_conf = tmp_path / "other_conf"
    other_conf.mkdir()
    env = env_with(config_package(tmp_path, "team-b", "team_b_configs", {"sink/x.yaml": SHOW}))
    script = textwrap.dedent(
        f"""
        from hydra._internal.utils import create_config_search_path
        from pipeline.app.configs import CONF_DIR, CONF_PATH
        for conf in ("file://{other_conf}", f"file://{{CONF_DIR}}", CONF_PATH):
            path = create_config_search_path(conf).get_path()
            print(",".join(element.provider for element in path))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    other, ours_as_folder, ours = result.stdout.splitlines()
    assert other == "hydra,main,schema"
    for found in (ours_as_folder, ours):  # pkg://pipeline.conf, or its folder given as a path
        assert found.startswith("hydra,main,") and found.endswith(",schema")
        assert "team-b [bulkinfer.configs:team_b_configs]" in found
