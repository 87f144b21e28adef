"""Plugin discovery through entry points.

Listing reads package metadata only; a plugin module is imported when a config selects it, so a
job that uses XGBoost never imports torch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from pipeline.errors import PluginLoadError, PluginNotFoundError
from pipeline.interfaces import Plugin, Predictor, Preprocessor, Sink, Source

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

    @property
    def entry_point(self) -> EntryPoint:
        return EntryPoint(name=self.name, value=self.value, group=KINDS[self.kind][0])


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")


@cache
def available(kind: str) -> dict[str, PluginInfo]:
    """Registered plugins of ``kind`` by name, read from installed package metadata."""
    _check_kind(kind)
    found: dict[str, PluginInfo] = {}
    for ep in entry_points(group=KINDS[kind][0]):
        dist = getattr(ep, "dist", None)
        found.setdefault(
            ep.name, PluginInfo(kind, ep.name, ep.value, dist.name if dist is not None else None)
        )
    return dict(sorted(found.items()))


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
            f"{kind} plugin {name!r} ({value}) is not a subclass of pipeline.interfaces."
            f"{base.__name__}"
        )
    return obj


def load(kind: str, name: str, *, key: str | None = None) -> type[Plugin]:
    """Import and return the plugin class registered as ``name``; ``key`` names the config key."""
    _check_kind(kind)
    info = available(kind).get(name)
    if info is None:
        raise _not_found(kind, name, key)
    return _load(kind, name, info.value)
