"""Plugin discovery through entry points.

Listing reads package metadata only; a plugin module is imported when a config selects it, so a
job that uses XGBoost never imports torch. A plugin class built for another major version of the
plugin contract (its ``plugin_api``, against :data:`~pipeline.contract.plugin.PLUGIN_API`) is
refused when it loads, naming its package: in runs, dry runs and ``bulkinfer-plugins list``.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from pipeline.contract.errors import PluginLoadError, PluginNotFoundError
from pipeline.contract.plugin import PLUGIN_API, Plugin, api_version
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


class MissingExtraError(PluginLoadError):
    """A plugin's extras (:attr:`~pipeline.contract.plugin.Plugin.extras`) are not installed."""


def _importable(module: str) -> bool:
    """Whether ``module`` (top-level) can be imported here, found without importing it."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook that refuses it, a broken package
        return False


def missing_extras(plugin: type[Plugin]) -> dict[str, list[str]]:
    """The plugin's extras whose modules are not installed: ``{extra: [missing modules]}``."""
    missing: dict[str, list[str]] = {}
    for extra, modules in plugin.extras.items():
        gone = [m for m in modules if not _importable(m)]
        if gone:
            missing[extra] = gone
    return missing


def install_hint(registered: PluginInfo, missing: dict[str, list[str]]) -> str:
    """``needs the extra 'lance' of bulkinfer (module lance is not installed): pip install
    'bulkinfer[lance]'`` for :func:`missing_extras`' answer."""
    modules = [m for gone in missing.values() for m in gone]
    names = ", ".join(f"{e!r}" for e in missing)
    what = f"module {modules[0]} is" if len(modules) == 1 else f"modules {', '.join(modules)} are"
    dist = registered.distribution
    if dist is None:
        return f"needs the modules {', '.join(modules)}, which are not installed"
    plural = "s" if len(missing) > 1 else ""
    return (
        f"needs the extra{plural} {names} of {dist} ({what} not installed): "
        f"pip install '{dist}[{','.join(missing)}]'"
    )


def load(
    kind: str, name: str, *, key: str | None = None, require_extras: bool = True
) -> type[Plugin]:
    """Import and return the plugin class registered as ``name``; ``key`` names the config key.

    Raises :class:`MissingExtraError` (one line with the pip command) when a module of the
    plugin's :attr:`~pipeline.contract.plugin.Plugin.extras` is not installed, unless
    ``require_extras`` is false (``describe`` shows the params anyway).
    """
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
        plugin = _load(kind, name, registered.value)
        check_api(plugin, registered)
    except PluginLoadError as exc:
        if key is None or exc.key:
            raise
        raise PluginLoadError(exc.message, key=key) from exc.__cause__
    missing = missing_extras(plugin) if require_extras else {}
    if missing:
        raise MissingExtraError(
            f"{kind} plugin {name!r} {install_hint(registered, missing)}", key=key
        )
    return plugin


def check_api(plugin: type[Plugin], registered: PluginInfo) -> None:
    """Refuse a plugin built for another major version of the contract than this bulkinfer's
    (:data:`~pipeline.contract.plugin.PLUGIN_API`), or one whose ``plugin_api`` is not a
    version: a :class:`PluginLoadError` naming the plugin, its package and what to install.
    A plugin that does not say (``plugin_api`` None) was written for 1.0 and is accepted."""
    declared = getattr(plugin, "plugin_api", None)
    if declared is None:
        return
    what = f"{registered.kind} plugin {registered.name!r} from {registered.package}"
    try:
        major, _ = api_version(declared)
    except ValueError as exc:
        raise PluginLoadError(f"{what}: plugin_api {exc}") from None
    ours, _ = api_version(PLUGIN_API)
    if major != ours:
        from importlib.metadata import PackageNotFoundError, version

        try:
            have = f"bulkinfer {version('bulkinfer')}"
        except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
            have = "this bulkinfer"
        raise PluginLoadError(
            f"{what} is built for plugin contract {declared}, but {have} provides "
            f"{PLUGIN_API} (major versions differ). Install a release of "
            f"{registered.distribution or 'the plugin package'} built for contract {ours}.x, "
            f"or a bulkinfer that provides {major}.x."
        )
