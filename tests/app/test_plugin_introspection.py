"""``python -m pipeline.app.plugin_cli list`` and ``describe``: what is installed, from the models.

Broken and clashing plugins are real distribution records (``*.dist-info``) in a temporary folder
on PYTHONPATH, as pip would leave them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import version

import pytest
from conftest import ROOT, run_cli
from dists import env_with, write_dist

from pipeline.contract.settings import StageSettings
from plugins.predictors.sentence_embedding import SentenceEmbedding

BULKINFER = f"bulkinfer {version('bulkinfer')}"


def plugins_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.app.plugin_cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def section(output: str, title: str) -> list[str]:
    """The indented lines under the heading that starts with ``title``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        body.append(line.strip())
    return body


@pytest.fixture
def broken_plugins(tmp_path):
    """A package whose predictor module is missing and whose sink is not a Sink class."""
    root = write_dist(
        tmp_path,
        "broken-plugins",
        {
            "bulkinfer.predictors": {"ghost": "no_such_module_xyz:Ghost"},
            "bulkinfer.sinks": {"not_a_sink": "json:JSONDecoder"},
        },
    )
    return env_with(root)


def test_list_prints_every_builtin_by_kind_with_its_package_and_summary():
    result = plugins_cli("list")
    assert result.returncode == 0, result.stderr
    expected = {
        "source plugins (bulkinfer.sources)": ["csv", "items", "json", "parquet", "text"],
        "predictor plugins (bulkinfer.predictors)": ["sentence_embedding"],
        "sink plugins (bulkinfer.sinks)": ["csv", "json", "parquet", "show"],
    }
    for title, names in expected.items():
        rows = {line.split()[0]: line for line in section(result.stdout, title)}
        for name in names:
            assert BULKINFER in rows[name], rows[name]
    embedding = section(result.stdout, "predictor plugins")
    assert any(SentenceEmbedding.__doc__.splitlines()[0] in line for line in embedding)


def test_a_broken_plugin_is_listed_with_the_reason_and_the_others_still_are(broken_plugins):
    result = plugins_cli("list", env=broken_plugins)
    assert result.returncode == 0, result.stderr
    predictors = {line.split()[0]: line for line in section(result.stdout, "predictor plugins")}
    assert "broken-plugins 0.1" in predictors["ghost"]
    assert "BROKEN:" in predictors["ghost"]
    assert "No module named 'no_such_module_xyz'" in predictors["ghost"]
    assert "BROKEN" not in predictors["sentence_embedding"]
    sinks = {line.split()[0]: line for line in section(result.stdout, "sink plugins")}
    assert "is not a subclass of pipeline.contract.Sink" in sinks["not_a_sink"]
    assert "BROKEN" not in sinks["parquet"]


def test_a_broken_plugin_does_not_stop_jobs_that_do_not_use_it(broken_plugins):
    result = run_cli("run.dry_run=true", env=broken_plugins)
    assert result.returncode == 0, result.stderr
    selected = run_cli("predictor.type=ghost", "run.dry_run=true", env=broken_plugins)
    assert selected.returncode == 2
    assert "predictor.type: predictor plugin 'ghost' (no_such_module_xyz:Ghost) failed" in (
        selected.stderr
    )


def test_describe_prints_params_and_stage_defaults_from_the_models():
    result = plugins_cli("describe", "predictor/sentence_embedding")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"predictor 'sentence_embedding' from {BULKINFER}")
    params = {line.split()[0]: line for line in section(out, "params:")[1:]}
    assert list(params) == list(SentenceEmbedding.Params.model_fields)
    for name, field in SentenceEmbedding.Params.model_fields.items():
        assert field.description in params[name]
    assert "'float32'" in params["dtype"] and "Literal['float32', 'float16']" in params["dtype"]
    stage = {line.split()[0]: line for line in section(out, "stage (")[1:]}
    assert list(stage) == list(StageSettings.model_fields)
    assert "  64  " in stage["batch_size"]  # the plugin's default_stage, not the base's None
    assert "'actors'" in stage["compute"]
    assert "type: sentence_embedding" in out  # a config to start from


def test_describe_required_params_are_marked(tmp_path):
    result = plugins_cli("describe", "source/parquet")
    assert result.returncode == 0, result.stderr
    path = next(x for x in section(result.stdout, "params:") if x.startswith("path "))
    assert "(required)" in path
    assert "path: ???" in result.stdout
    assert "stage (" not in result.stdout  # sources are not map stages


def test_describe_imports_only_the_plugin_it_describes():
    script = textwrap.dedent(
        """
        import sys
        from pipeline.app.plugin_cli import main
        code = main(["describe", "sentence_embedding"])
        print(code, sorted(m for m in sys.modules if m.startswith(("plugins.", "ray", "torch"))))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    code, modules = result.stdout.splitlines()[-1].split(" ", 1)
    assert code == "0", result.stderr
    assert "plugins.predictors.sentence_embedding" in modules
    for other in ("plugins.sources", "plugins.sinks", "ray", "torch"):
        assert f"'{other}" not in modules, modules


def test_describe_needs_the_kind_only_when_a_name_is_ambiguous():
    result = plugins_cli("describe", "parquet")
    assert result.returncode == 2
    assert "say which: source/parquet, sink/parquet" in result.stderr
    assert plugins_cli("describe", "sinks/parquet").returncode == 0


def test_describe_an_unknown_or_broken_plugin_exits_2_with_the_reason(broken_plugins):
    unknown = plugins_cli("describe", "sentence_embeding")
    assert unknown.returncode == 2
    assert "Did you mean 'sentence_embedding'" in unknown.stderr  # the closest name first
    broken = plugins_cli("describe", "ghost", env=broken_plugins)
    assert broken.returncode == 2
    assert "No module named 'no_such_module_xyz'" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_a_plugin_name_two_packages_register_is_reported_not_shadowed(tmp_path):
    env = env_with(
        write_dist(tmp_path, "other-sinks", {"bulkinfer.sinks": {"show": "json:JSONDecoder"}})
    )
    listed = plugins_cli("list", env=env)
    show = next(x for x in section(listed.stdout, "sink plugins") if x.startswith("show "))
    assert BULKINFER in show and "other-sinks 0.1" in show and "BROKEN" in show
    result = run_cli("sink=show", "run.dry_run=true", env=env)
    assert result.returncode == 2
    assert "sink plugin name 'show' is registered by more than one installed package" in (
        result.stderr
    )


def test_the_config_describe_prints_is_a_valid_stage_for_the_plugin():
    from pipeline.app.plugin_cli import example_config
    from pipeline.plan.planner import plan_job

    config = {
        "source": {"type": "items", "params": {"items": ["a"], "column": "text"}},
        "predictor": example_config("predictor", "sentence_embedding", SentenceEmbedding),
        "sink": {"type": "show"},
    }
    plan = plan_job(config, inspect=False)
    # the stage as configured; the planner's CPUs, threads and actors are the plan's layout
    assert plan.maps[0].stage == SentenceEmbedding.default_stage
