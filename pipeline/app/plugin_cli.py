"""What is installed: ``bulkinfer-plugins list`` and ``describe [KIND/]NAME``.

The same commands run as ``python -m pipeline.app.plugin_cli list | describe NAME``.

``list`` prints every registered plugin by kind with the package it came from, checking that each
one imports (a broken plugin is listed with the reason and does not hide the others) and that its
extras are installed (else the pip command that installs them), then the config packages.
``describe`` imports only the plugin it is asked about and prints its params and default stage
settings from the pydantic models, plus a config to start from.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.app import configs
from pipeline.app.cli import report
from pipeline.contract.errors import BulkInferError, ConfigError, PluginNotFoundError
from pipeline.contract.plugin import PLUGIN_API, Plugin
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import MapStage
from pipeline.plan import registry

#: The pins bulkinfer is tested with on machines without a GPU (package data of the wheel).
CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def summary(plugin: type[Plugin]) -> str:
    """First line of the plugin class's docstring."""
    doc = (plugin.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        indent
        + "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    ]


def list_lines() -> list[str]:
    """The report ``list`` prints."""
    lines: list[str] = []
    for kind, (group, _) in registry.KINDS.items():
        lines.append(f"{kind} plugins ({group})")
        rows = []
        for name, info in registry.available(kind).items():
            clash = registry.clashes(kind).get(name)
            try:
                plugin = registry.load(kind, name, require_extras=False)
            except BulkInferError as exc:
                status = f"BROKEN: {exc.message}"
            else:
                missing = registry.missing_extras(plugin)
                hint = registry.install_hint(info, missing) if missing else ""
                status = f"MISSING EXTRA: {hint}" if missing else summary(plugin)
            package = " + ".join(i.package for i in clash) if clash else info.package
            rows.append([name, package, status])
        lines += _table(rows) if rows else ["  (none installed)"]
    report_ = configs.search_path_report()
    lines.append(f"config packages ({configs.GROUP})")
    rows = []
    for package in configs.config_packages():
        dist = _dist_label(package)
        if package in report_.usable:
            options = sorted(p.removesuffix(".yaml") for p in package.files())
            shown = ", ".join(options[:6]) + (", ..." if len(options) > 6 else "")
            rows.append([package.name, dist, f"{package.search_path}: {shown or '(empty)'}"])
        else:
            reason = dict(report_.broken).get(package, "unusable")
            rows.append([package.name, dist, f"BROKEN: {reason}"])
    lines += _table(rows) if rows else ["  (none installed)"]
    for clash in report_.clashes.values():
        lines.append(f"  clash: {clash.describe()}")
    return lines


def _dist_label(package: configs.ConfigPackage) -> str:
    from importlib.metadata import PackageNotFoundError, version

    if package.distribution is None:
        return "(unknown distribution)"
    try:
        return f"{package.distribution} {version(package.distribution)}"
    except PackageNotFoundError:
        return package.distribution


def resolve(spec: str) -> tuple[str, str]:
    """``KIND/NAME`` or an unambiguous ``NAME`` -> (kind, name); raises PluginNotFoundError."""
    kind, _, name = spec.rpartition("/")
    if kind:
        kind = kind.rstrip("s") if kind.rstrip("s") in registry.KINDS else kind
        if kind not in registry.KINDS:
            raise ConfigError(f"unknown plugin kind {kind!r}; kinds: {', '.join(registry.KINDS)}")
        registry.info(kind, name)  # raises, with suggestions, if there is no such plugin
        return kind, name
    matches = [k for k in registry.KINDS if name in registry.available(k)]
    if len(matches) == 1:
        return matches[0], name
    if matches:
        options = ", ".join(f"{k}/{name}" for k in matches)
        raise ConfigError(f"{name!r} names more than one plugin; say which: {options}")
    every = [f"{k}/{n}" for k in registry.KINDS for n in registry.available(k)]
    names = sorted({e.split("/", 1)[1] for e in every})
    close = [n for n in names if name in n] or difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise PluginNotFoundError(f"no plugin named {name!r}.{hint} Installed: {', '.join(every)}.")


def type_name(annotation: Any) -> str:
    """A readable type: ``int``, ``str | None``, ``Literal['a', 'b']``, ``list[str]``."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    for prefix in ("pipeline.contract.settings.", "pipeline.contract.plugin."):
        text = text.replace(prefix, "")
    return text


_BOUNDS = {
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "min_length": "len >=",
    "max_length": "len <=",
}


def _constraints(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attr, symbol in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return f" ({', '.join(parts)})" if parts else ""


def _default(field: Any) -> Any:
    if field.default_factory is not None:
        return field.default_factory()
    return field.default


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def field_rows(model: type[BaseModel], values: dict[str, Any] | None = None) -> list[list[str]]:
    """[name, type, default, description] per field; ``values`` overrides the defaults shown."""
    rows = [["name", "type", "default", "description"]]
    for attr, field in model.model_fields.items():
        name = field.alias or attr
        if values is not None and attr in values:
            default = _short(repr(values[attr]))
        elif field.is_required():
            default = "(required)"
        else:
            default = _short(repr(_default(field)))
        kind = type_name(field.annotation) + _constraints(field)
        rows.append([name, kind, default, field.description or ""])
    return rows


def example_config(kind: str, name: str, plugin: type[Plugin]) -> dict[str, Any]:
    """A stage config with every param at its default (``???`` where one is required)."""
    params = {}
    for attr, field in plugin.Params.model_fields.items():
        field_name = field.alias or attr
        if field.is_required():
            params[field_name] = "???"
        else:
            default = _default(field)
            params[field_name] = default.model_dump() if isinstance(default, BaseModel) else default
    config: dict[str, Any] = {"type": name, "params": params}
    if issubclass(plugin, MapStage):
        config["stage"] = plugin.default_stage.model_dump(exclude_unset=True)
    return config


def to_yaml(data: dict[str, Any]) -> str:
    """Block-style YAML with lists of plain values on one line, as people write configs."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def short_lists(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
        flat = all(not isinstance(x, dict | list) for x in items)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)

    Dumper.add_representer(list, short_lists)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=96)


def describe_lines(spec: str) -> list[str]:
    """The report ``describe`` prints; imports only the plugin described."""
    kind, name = resolve(spec)
    info = registry.info(kind, name)
    plugin = registry.load(kind, name, require_extras=False)
    lines = [f"{kind} {name!r} from {info.package} ({info.value})"]
    if summary(plugin):
        lines.append(f"  {summary(plugin)}")
    if info.distribution != "bulkinfer":  # a third party's: which contract it was built for
        built_for = plugin.plugin_api or "1.0 (it does not say: the oldest contract)"
        lines.append(f"  built for plugin contract {built_for}; bulkinfer provides {PLUGIN_API}")
    missing = registry.missing_extras(plugin)
    if missing:
        lines.append(f"  MISSING EXTRA: {registry.install_hint(info, missing)}")
    lines += ["", "params:"] + _table(field_rows(plugin.Params))
    if issubclass(plugin, MapStage):
        stage = plugin.default_stage.model_dump()
        lines += ["", f"stage (this plugin's defaults; set any under {kind}.stage):"]
        lines += _table(field_rows(StageSettings, stage))
    snippet = to_yaml(example_config(kind, name, plugin))
    lines += ["", f"config (e.g. conf/{kind}/my_{name}.yaml):"]
    lines += ["  " + line for line in snippet.rstrip().splitlines()]
    return lines


def _program_name() -> str:
    """``bulkinfer-plugins`` as a console script, ``python -m pipeline.app.plugin_cli`` as a
    module."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m pipeline.app.plugin_cli" if not name or name.endswith(".py") else name


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bulkinfer-plugins`` and ``python -m pipeline.app.plugin_cli``; the exit
    status."""
    parser = argparse.ArgumentParser(
        prog=_program_name(), description="Installed bulkinfer plugins and configs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every plugin by kind, its package, and config packages")
    describe = commands.add_parser("describe", help="one plugin's params and stage settings")
    describe.add_argument("name", help="NAME, or KIND/NAME when several kinds use the name")
    commands.add_parser(
        "constraints",
        help="the path of the pip constraints bulkinfer is tested with (CPU machines): "
        'pip install -c "$(bulkinfer-plugins constraints)" PACKAGE',
    )
    args = parser.parse_args(argv)
    if args.command == "constraints":
        print(CONSTRAINTS)
        return 0
    try:
        lines = list_lines() if args.command == "list" else describe_lines(args.name)
    except BulkInferError as error:
        return report(error)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
