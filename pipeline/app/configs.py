"""Config packages: installed packages that contribute folders of Hydra configs.

bulkinfer's own configs are package data of ``pipeline.conf`` (``pipeline/conf/``), which the
Hydra app reads as ``pkg://pipeline.conf``: the same from a wheel as from a clone. A package
registers an importable package (or subpackage) under the entry-point group ``bulkinfer.configs``;
that package holds the same group folders (``predictor/``, ``source/``, ``experiment/``, ...).
The Hydra search-path plugin in ``hydra_plugins/bulkinfer_configs`` appends each one as
``pkg://<package>`` after bulkinfer's own, so ``bulkinfer predictor=team_a/sentiment`` finds
``team_a_configs/predictor/team_a/sentiment.yaml`` without any file being copied.

Hydra resolves a name to the first search-path entry that has it, which would make an option
that two packages provide (or that shadows a built-in) mean whatever the install order says.
This module finds those clashes so the app can warn about them and refuse a job that selects one.
Nothing here imports Hydra.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

#: The package that holds bulkinfer's own config groups, and its Hydra search-path entry (the
#: primary config path of ``bulkinfer`` / ``python -m pipeline``).
CONF_PACKAGE = "pipeline.conf"
CONF_PATH = f"pkg://{CONF_PACKAGE}"
#: Where those files are on disk (inside the installed package; for tests and tools that read
#: them as files).
CONF_DIR = Path(importlib.util.find_spec(CONF_PACKAGE).origin).parent
GROUP = "bulkinfer.configs"
BUILTIN = "bulkinfer (built-in configs)"


@dataclass(frozen=True)
class ConfigPackage:
    """One ``bulkinfer.configs`` entry point: ``name = "importable.package"``."""

    name: str
    module: str
    distribution: str | None

    @property
    def provider(self) -> str:
        """How the package is named in ``--info searchpath`` and in clash reports."""
        return f"{self.distribution or '(unknown distribution)'} [{GROUP}:{self.name}]"

    @property
    def search_path(self) -> str:
        return f"pkg://{self.module}"

    def files(self) -> set[str]:
        """Config files the package provides, as ``group/option.yaml`` paths.

        Raises :class:`ConfigPackageError` when the package cannot be used by Hydra.
        """
        try:
            root = resources.files(self.module)
        except Exception as exc:  # ModuleNotFoundError, or the package's own import error
            raise ConfigPackageError(
                f"config package {self.provider}: cannot import {self.module!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if not root.joinpath("__init__.py").is_file():
            raise ConfigPackageError(
                f"config package {self.provider}: {self.module!r} has no __init__.py, which Hydra "
                "needs to read configs from a package (an empty file is enough)"
            )
        return _yaml_files(root)


class ConfigPackageError(Exception):
    """A registered config package that cannot be put on the search path (not a user error)."""


def _yaml_files(root, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for entry in root.iterdir():
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            if not entry.name.startswith((".", "__")):
                found |= _yaml_files(entry, rel + "/")
        elif entry.name.endswith(".yaml"):
            found.add(rel)
    return found


@cache
def config_packages() -> tuple[ConfigPackage, ...]:
    """Registered config packages, read from installed package metadata, sorted by name."""
    found = []
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        module = ep.value.split(":", 1)[0].strip()
        found.append(ConfigPackage(ep.name, module, dist.name if dist is not None else None))
    return tuple(sorted(found, key=lambda p: (p.name, p.distribution or "")))


@dataclass(frozen=True)
class Clash:
    """A config file that more than one provider has; ``providers[0]`` is the one Hydra reads."""

    path: str
    providers: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.path} is provided by {' and by '.join(self.providers)}"


@dataclass(frozen=True)
class SearchPathReport:
    """What the search-path plugin appends, and what is wrong with the rest."""

    usable: tuple[ConfigPackage, ...]
    broken: tuple[tuple[ConfigPackage, str], ...]  # packages that cannot be used, and why
    clashes: dict[str, Clash]


def _builtin_files() -> set[str]:
    return _yaml_files(resources.files(CONF_PACKAGE))


@cache
def search_path_report() -> SearchPathReport:
    """Scan bulkinfer's own configs and every config package once per process."""
    owners: dict[str, list[str]] = {path: [BUILTIN] for path in _builtin_files()}
    usable: list[ConfigPackage] = []
    broken: list[tuple[ConfigPackage, str]] = []
    for package in config_packages():
        try:
            files = package.files()
        except ConfigPackageError as exc:
            broken.append((package, str(exc)))
            continue
        usable.append(package)
        for path in files:
            owners.setdefault(path, []).append(package.provider)
    clashes = {
        path: Clash(path, tuple(providers))
        for path, providers in sorted(owners.items())
        if len(providers) > 1
    }
    return SearchPathReport(tuple(usable), tuple(broken), clashes)


def clash_for(group: str | None, option: str) -> Clash | None:
    """The clash for option ``option`` of config group ``group`` (None: a root config)."""
    path = f"{group}/{option}.yaml" if group else f"{option}.yaml"
    return search_path_report().clashes.get(path)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Print ``bulkinfer: warning: MESSAGE`` on stderr, once per process."""
    if message not in _warned:
        _warned.add(message)
        print(f"bulkinfer: warning: {message}", file=sys.stderr)


def warn_about_search_path() -> None:
    """Report unusable config packages and clashing config files on stderr."""
    report = search_path_report()
    for _, message in report.broken:
        warn_once(f"{message}; its configs are not on the search path")
    for clash in report.clashes.values():
        warn_once(f"config clash: {clash.describe()}; a job that selects it is refused")
