"""Plugin discovery through entry points.

Listing reads package metadata only; a plugin module is imported when a config selects it, so a
job that uses XGBoost never imports torch.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, requires, version

from pipeline.contract.errors import ConfigError, PluginLoadError, PluginNotFoundError
from pipeline.contract.plugin import Plugin
from pipeline.contract.sink import Sink
from pipeline.contract.source import Source
from pipeline.contract.stage import Predictor, Preprocessor

#: kind -> (entry-point group, base class every plugin of that kind subclasses)
KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "source": ("bulkinfer.sources", Source),
    "preprocessor": ("bulkinfer.preprocessors", Preprocessor),
    "predictor": ("bulkinfer.predictors", Predictor),
    "sink": ("bulkinfer.sinks", Sink),
}


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin, as its package declares it (nothing imported)."""

    kind: str
    name: str
    value: str  # "module:attr"
    distribution: str | None
    version: str | None = None

    @property
    def package(self) -> str:
        """The distribution that registers it, with its version: ``bulkinfer 0.2.0``."""
        if self.distribution is None:
            return "(unknown distribution)"
        return f"{self.distribution} {self.version}" if self.version else self.distribution

    @property
    def entry_point(self) -> EntryPoint:
        return EntryPoint(name=self.name, value=self.value, group=KINDS[self.kind][0])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")


@cache
def _registered(kind: str) -> dict[str, tuple[PluginInfo, ...]]:
    _check_kind(kind)
    found: dict[str, list[PluginInfo]] = {}
    for ep in entry_points(group=KINDS[kind][0]):
        dist = getattr(ep, "dist", None)
        name, version = (dist.name, dist.version) if dist is not None else (None, None)
        found.setdefault(ep.name, []).append(PluginInfo(kind, ep.name, ep.value, name, version))
    return {name: tuple(infos) for name, infos in sorted(found.items())}


@cache
def available(kind: str) -> dict[str, PluginInfo]:
    """Registered plugins of ``kind`` by name, read from installed package metadata."""
    return {name: infos[0] for name, infos in _registered(kind).items()}


def refresh() -> None:
    """Forget what was read from package metadata (after installing plugins in this process)."""
    import importlib

    importlib.invalidate_caches()
    _registered.cache_clear()
    available.cache_clear()


def clashes(kind: str) -> dict[str, tuple[PluginInfo, ...]]:
    """Names of ``kind`` that more than one installed distribution registers."""
    return {name: infos for name, infos in _registered(kind).items() if len(infos) > 1}


def _not_found(kind: str, name: str, key: str | None) -> PluginNotFoundError:
    names = list(available(kind))
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names) if names else "(none installed)"
    looks_like_path = "." in name or ":" in name
    how = (
        " Configs name registered plugins, never Python paths: register your class under the "
        f"entry-point group {KINDS[kind][0]!r} in your package's pyproject.toml."
        if looks_like_path
        else ""
    )
    return PluginNotFoundError(
        f"no {kind} plugin named {name!r}.{hint} Available: {listed}.{how}", key=key
    )


@cache
def _load(kind: str, name: str, value: str) -> type[Plugin]:
    try:
        obj = EntryPoint(name=name, value=value, group=KINDS[kind][0]).load()
    except Exception as exc:  # a broken third-party plugin must name itself
        raise PluginLoadError(
            f"{kind} plugin {name!r} ({value}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    base = KINDS[kind][1]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginLoadError(
            f"{kind} plugin {name!r} ({value}) is not a subclass of pipeline.contract."
            f"{base.__name__}"
        )
    return obj


def info(kind: str, name: str, *, key: str | None = None) -> PluginInfo:
    """The registration of plugin ``name`` (nothing imported); raises if there is none."""
    _check_kind(kind)
    found = available(kind).get(name)
    if found is None:
        raise _not_found(kind, name, key)
    return found


def load(kind: str, name: str, *, key: str | None = None) -> type[Plugin]:
    """Import and return the plugin class registered as ``name``; ``key`` names the config key."""
    registered = info(kind, name, key=key)
    clash = clashes(kind).get(name)
    if clash:
        who = ", ".join(f"{c.package} ({c.value})" for c in clash)
        raise PluginLoadError(
            f"{kind} plugin name {name!r} is registered by more than one installed package: "
            f"{who}. Which one would load depends on install order; uninstall one of them or "
            "ask its authors to rename it.",
            key=key,
        )
    try:
        return _load(kind, name, registered.value)
    except PluginLoadError as exc:
        if key is None or exc.key:
            raise
        raise PluginLoadError(exc.message, key=key) from exc.__cause__


def _normal(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``Pillow`` -> ``pillow``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(distribution: str) -> bool:
    """Whether ``distribution`` (a pip name) is installed here (its metadata; nothing imported)."""
    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


@cache
def extras(distribution: str) -> dict[str, frozenset[str]]:
    """``distribution``'s extras: name -> the distributions it adds (normalised names), read from
    its metadata. Bundles of its own extras (``all``, or ``test`` with ``bulkinfer[docs]``) are
    left out: they are never the one extra to suggest."""
    try:
        lines = requires(distribution) or []
    except PackageNotFoundError:
        return {}
    found: dict[str, set[str]] = {}
    bundles: set[str] = set()
    for line in lines:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)[\"']", line)
        if not (name and extra):
            continue
        if _normal(name.group(1)) == _normal(distribution):
            bundles.add(extra.group(1))
        found.setdefault(extra.group(1), set()).add(_normal(name.group(1)))
    return {k: frozenset(v) for k, v in found.items() if k not in bundles}


def install_hint(distribution: str | None, missing: list[str], declared: tuple[str, ...]) -> str:
    """The pip command that installs ``missing`` libraries of a plugin of ``distribution``.

    Picks the extras of ``distribution`` that provide them: first the one covering most of the
    missing ones, ties going to the one covering most of the plugin's ``declared`` libraries,
    then to the smallest. Libraries no extra provides are named on their own:
    ``pip install "bulkinfer[embeddings]"``, ``pip install "bulkinfer[transformers,images]"``,
    ``pip install some-lib``.
    """
    offered = extras(distribution) if distribution else {}
    wanted = {_normal(m) for m in missing}
    everything = {_normal(d) for d in declared}
    chosen: list[str] = []
    while wanted:
        scored = sorted(
            (-len(libs & wanted), -len(libs & everything), len(libs), name)
            for name, libs in offered.items()
            if libs & wanted
        )
        if not scored:
            break
        name = scored[0][-1]
        chosen.append(name)
        wanted -= offered[name]
    parts = [f"{distribution}[{','.join(chosen)}]"] if chosen else []
    parts += sorted(m for m in missing if _normal(m) in wanted)
    return "pip install " + " ".join(f'"{p}"' if "[" in p else p for p in parts)


def check_installed(kind: str, name: str, plugin: type[Plugin], key: str) -> None:
    """Refuse a plugin whose declared ``libraries`` are not installed here, with the one pip
    command that installs them (:func:`install_hint`); raises ConfigError naming ``key``."""
    declared = tuple(getattr(plugin, "libraries", ()) or ())
    missing = [lib for lib in declared if not installed(lib)]
    if not missing:
        return
    info = available(kind).get(name)
    hint = install_hint(info.distribution if info else None, missing, declared)
    names = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
    which = "which is" if len(missing) == 1 else "which are"
    raise ConfigError(f"{kind} '{name}' needs {names}, {which} not installed: {hint}", key=key)
