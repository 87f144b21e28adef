"""bulkinfer's wheel in a fresh virtual environment, as a team installs it (for tests/packaging).

:func:`build_wheel` runs ``pip wheel`` on a copy of the checkout; :func:`make_env` makes a virtual
environment with only that wheel installed (``--no-deps --no-index``) and sees this environment's
third-party packages (Ray, torch, ...) through a folder of links that leaves out bulkinfer's own
editable install, so every ``pipeline``, ``plugins`` and ``hydra_plugins`` import, every config
and the sample texts come from the wheel. ``leave_out`` also leaves distributions out (their
metadata and their import names): an environment without an extra's libraries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import PathDistribution
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The wheel's only top-level import names (pyproject.toml: tool.setuptools.packages).
TOP_LEVEL = {"pipeline", "plugins", "hydra_plugins"}
#: What the copy of the checkout leaves out (environments, caches, outputs).
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "site", "outputs", "multirun", "models", "*.egg-info",
    "__pycache__", ".pytest_cache", ".ruff_cache", ".whl", ".gl",
)  # fmt: skip


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Run a command; the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def build_wheel(work: Path) -> Path:
    """``pip wheel`` of a copy of the checkout made under ``work`` (the checkout gets no build/
    folder); returns the wheel's path."""
    source = work / "source" / "bulkinfer"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    out = work / "dist"
    out.mkdir()
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(out), str(source)],
        cwd=out,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("bulkinfer-*.whl")
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _import_names(dist: PathDistribution) -> set[str]:
    """The top-level names a distribution installs into site-packages (from its RECORD)."""
    names = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first not in ("..", "") and not first.endswith((".dist-info", ".data")):
            names.add(first)
    return names


def site_links(folder: Path, leave_out: set[str] = frozenset()) -> Path:
    """Links to this environment's site-packages entries, less bulkinfer's own install and the
    distributions named in ``leave_out`` (pip names).

    Left out: bulkinfer's distribution record and editable-install hooks, the names its wheel
    provides, any distribution that registers bulkinfer plugins or configs (the examples, when
    another test left them installed), and ``leave_out`` with the names they install.
    """
    site = Path(sysconfig.get_paths()["purelib"])
    skip = set(TOP_LEVEL)
    wanted_out = {_normal(n) for n in leave_out}
    for record in site.glob("*.dist-info"):
        dist = PathDistribution(record)
        groups = {ep.group for ep in dist.entry_points}
        name = _normal(dist.metadata["Name"] or "")
        if name == "bulkinfer" or any(g.startswith("bulkinfer.") for g in groups):
            skip.add(record.name)
        elif name in wanted_out:
            skip |= {record.name, *_import_names(dist)}
    folder.mkdir()
    for entry in site.iterdir():
        editable = entry.name.startswith("__editable__") or entry.suffix == ".egg-link"
        mentions_checkout = entry.suffix == ".pth" and str(ROOT) in entry.read_text()
        if entry.name in skip or editable or mentions_checkout:
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def make_env(wheel: Path, root: Path, leave_out: set[str] = frozenset()) -> Path:
    """A new virtual environment under ``root`` with the wheel installed, the rest linked from
    this environment (less ``leave_out``); returns its folder (``bin/bulkinfer`` in it)."""
    env_dir = root / "env"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=root)
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root
    ).stdout.strip()
    links = site_links(root / "outer-site-packages", leave_out)
    # A .pth line that starts with "import" runs: the links become a site dir (their .pth too).
    Path(purelib, "zz_outer_environment.pth").write_text(
        f"import site; site.addsitedir({str(links)!r})\n"
    )
    installed = run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=root,
    )
    assert installed.returncode == 0, installed.stderr
    return env_dir


def clean_env(env_dir: Path | None = None) -> dict[str, str]:
    """This process's environment, minus anything that could point imports at the checkout;
    with ``env_dir``, its ``bin`` first on ``PATH`` (its ``bulkinfer`` is the one found)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HYDRA_FULL_ERROR"] = "0"
    if env_dir is not None:
        env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(env_dir)
    return env
