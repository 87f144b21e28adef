"""The worked examples under examples/, pip-installed for real, used by config alone.

``examples/bulkinfer-lexicon`` is a plugin package (a predictor in ``bulkinfer.predictors`` and its
configs in ``bulkinfer.configs``); ``examples/team-a-configs`` is a YAML-only config package that
uses it; ``examples/bulkinfer-lexicon-api1.0`` is the same plugin written against the oldest
supported plugin contract (bulkinfer 0.1's modules, no ``output_schema``). The module installs
all three into this interpreter's environment (from a copy, so the source tree stays clean) and
uninstalls them afterwards, so other test modules never see them. Jobs run through
``python -m pipeline`` in a subprocess, as a user would run them.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_cli

pytestmark = pytest.mark.packaging  # pip-installs the example packages; runs their jobs

EXAMPLES = ("bulkinfer-lexicon", "team-a-configs", "bulkinfer-lexicon-api1.0")
#: Distribution names, as pip knows them (the folder names above, but for the 1.0 copy).
DISTRIBUTIONS = {"bulkinfer-lexicon-api1.0": "bulkinfer-lexicon-api10"}


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module", autouse=True)
def installed_examples(tmp_path_factory):
    """pip-install the example packages (offline, no deps); uninstall what we installed."""
    copies = tmp_path_factory.mktemp("examples")
    before = set()
    for name in EXAMPLES:
        try:
            version(DISTRIBUTIONS.get(name, name))
            before.add(name)
        except PackageNotFoundError:
            pass
        shutil.copytree(ROOT / "examples" / name, copies / name)
    _pip(
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        *(str(copies / name) for name in EXAMPLES),
    )
    yield
    installed_here = [DISTRIBUTIONS.get(name, name) for name in EXAMPLES if name not in before]
    if installed_here:
        _pip("uninstall", "-y", *installed_here)


def _dry_run(*args: str):
    result = run_cli(*args, "run.dry_run=true")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _params(plan: str, key: str) -> dict:
    """The params JSON the dry-run plan prints for step ``key``."""
    after = plan.split(f". {key}: ", 1)[1]
    return json.loads(after.split("params: ", 1)[1].split("\n", 1)[0])


def test_searchpath_info_names_each_config_package_and_its_distribution():
    result = run_cli("--info", "searchpath")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert any(
        "bulkinfer-lexicon [bulkinfer.configs:lexicon]" in r and "pkg://bulkinfer_lexicon.conf" in r
        for r in rows
    ), result.stdout
    assert any(
        "team-a-configs [bulkinfer.configs:team_a]" in r and "pkg://team_a_configs" in r
        for r in rows
    )
    providers = [r.split("|")[1].strip() for r in rows]
    # bulkinfer's own conf/ comes first, so a package can add options but never replace one
    assert providers.index("main") < providers.index(
        "bulkinfer-lexicon [bulkinfer.configs:lexicon]"
    )


def test_plugin_package_predictor_is_selected_by_its_config_option():
    plan = _dry_run("predictor=lexicon/sentiment")
    assert "predictor: predictor 'lexicon_sentiment'" in plan
    assert "compute=tasks" in plan  # the option's stage settings


def test_team_option_composes_the_plugin_packages_option_and_changes_only_its_words():
    plan = _dry_run("predictor=team_a/sentiment")
    params = _params(plan, "predictor")
    assert params["positive"][:2] == ["love", "great"]  # team A's words
    assert params["threshold"] == 0.2  # team A's value
    assert params["label_column"] == "sentiment_label"  # inherited from predictor/lexicon/sentiment


def test_team_preset_overrides_groups_with_the_package_directive():
    plan = _dry_run("+experiment=team_a/reviews")
    assert "plan 'team_a_reviews'" in plan
    assert "source: source 'items'" in plan
    assert "sink: sink 'show'" in plan


def test_presets_stack_and_the_last_one_wins():
    plan = _dry_run("+experiment=[team_a/reviews,preview]")
    assert "plan 'preview'" in plan  # bulkinfer's preset came last
    assert "source: source 'items'" in plan  # team A's preset still chose the source
    assert '"limit": 5' in plan


def test_a_team_primary_config_layers_its_defaults_over_bulkinfers():
    plan = _dry_run("--config-name", "team_a")
    assert "plan 'team_a'" in plan
    assert "source: source 'items'" in plan
    assert "predictor 'lexicon_sentiment'" in plan
    assert "sink: sink 'parquet'" in plan  # bulkinfer's default sink, untouched


def test_plugins_list_names_the_example_packages():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.app.plugin_cli", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("lexicon_sentiment"))
    assert "bulkinfer-lexicon 0.1.0" in line and "Score the sentiment" in line
    team = next(x for x in result.stdout.splitlines() if x.strip().startswith("team_a "))
    assert "team-a-configs 0.1.0" in team and "predictor/team_a/sentiment" in team


def test_plugin_package_job_runs_end_to_end_and_writes_scores(tmp_path):
    out = tmp_path / "scores"
    result = run_cli(
        "predictor=lexicon/sentiment",
        f"sink.params.path={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "run.progress=false",
    )
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 300
    assert {"id", "text", "sentiment", "sentiment_label"} <= set(table.column_names)
    labels = set(table.column("sentiment_label").to_pylist())
    assert labels <= {"positive", "negative", "neutral"} and len(labels) > 1


def test_a_plugin_written_against_the_oldest_contract_plans_with_its_columns_decided_at_run_time():
    plan = _dry_run("predictor=lexicon_api10/sentiment")
    assert "predictor: predictor 'lexicon_sentiment_api10'" in plan
    assert "columns after predictor: decided at run time (the stage declares no output_schema)" in (
        plan
    )


def test_a_plugin_written_against_the_oldest_contract_runs_and_scores_as_the_current_one(tmp_path):
    """The 1.0 copy adds its columns without declaring them; every row gets the score the
    current package's scoring function gives its text."""
    from bulkinfer_lexicon.predictor import NEGATIVE, POSITIVE, score

    out = tmp_path / "scores"
    result = run_cli(
        "predictor=lexicon_api10/sentiment",
        f"sink.params.path={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "run.progress=false",
    )
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning" not in result.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 300
    for row in rows:
        assert row["sentiment"] == pytest.approx(
            score(row["text"], set(POSITIVE), set(NEGATIVE), True), abs=1e-6
        )
        expected = (
            "positive"
            if row["sentiment"] > 0
            else "negative"
            if row["sentiment"] < 0
            else "neutral"
        )
        assert row["sentiment_label"] == expected


def test_team_config_job_runs_end_to_end_with_secrets_masked_everywhere(tmp_path):
    """Team A's own primary config, by config alone; a credential never reaches logs or files."""
    secret = "sk-live-0123456789"
    out = tmp_path / "reviews"
    run_dir = tmp_path / "run"
    result = run_cli(
        "--config-name",
        "team_a",
        f"sink.params.path={out}",
        f"hydra.run.dir={run_dir}",
        "run.progress=false",
        f"+predictor.stage.ray_remote_args.runtime_env.env_vars.API_TOKEN={secret}",
    )
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert rows[1]["sentiment_label"] == "positive"  # "Love it, works great and arrived fast"
    assert rows[2]["sentiment_label"] == "negative"  # "Arrived broken, I returned it ..."
    assert rows[3]["sentiment_label"] == "neutral"  # "It is a kettle"

    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in written)  # the run logged its plan
    log_text = "".join(p.read_text() for p in written if p.suffix == ".log")
    assert "API_TOKEN" in log_text and "***" in log_text
    for text in [result.stdout, result.stderr, *(p.read_text() for p in written)]:
        assert secret not in text


def test_the_kuberay_rayjob_entrypoint_composes_with_the_config_package(tmp_path):
    """examples/kuberay/rayjob.yaml runs team A's job: its overrides validate and plan here (with
    this machine's paths for the output and the run folder)."""
    import yaml

    manifest = yaml.safe_load((ROOT / "examples" / "kuberay" / "rayjob.yaml").read_text())
    command, *args = shlex.split(manifest["spec"]["entrypoint"])
    assert command == "bulkinfer"
    local = {"sink.params.path": str(tmp_path / "out"), "hydra.run.dir": str(tmp_path / "run")}
    args = [f"{a.split('=')[0]}={local[a.split('=')[0]]}" if a.split("=")[0] in local else a
            for a in args]  # fmt: skip
    plan = _dry_run(*args)
    assert "plan 'team_a'" in plan
    assert "predictor 'lexicon_sentiment'" in plan
    assert "  ray: auto;" in plan  # joins the cluster it was submitted to
