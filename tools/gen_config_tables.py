"""The tables of config groups, options and run/ray settings in README.md and docs/configs.md.

They are generated, never written by hand: the options are the YAML files bulkinfer packages
(``pipeline.conf``, composed with Hydra for the plugin each selects), their descriptions the
first sentence of each file's leading comment, the plugins' summaries come from the registry, and
the run and ray settings from the pydantic models ``RunSettings`` and ``RaySettings``. Each table
sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in the page.

    python -m tools.gen_config_tables           # rewrite the tables in README.md and docs/
    python -m tools.gen_config_tables --check   # exit 1 if a page's table is not current

``tests/packaging/test_generated_docs.py`` fails when a table is stale, and the documentation
site's build (``tools/gen_plugin_reference.py``) writes docs/configs.md with current tables.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Pages that hold generated tables, relative to the repository.
PAGES = ("README.md", "docs/configs.md")
#: The config groups in the order the pages show them, with what each holds.
GROUPS = {
    "source": "where rows come from",
    "preprocessor": "CPU stages before the model, listed in `preprocessors:`",
    "predictor": "the model",
    "sink": "where predictions go",
    "ray": "where the job runs",
    "experiment": "whole presets layered over the defaults (`+experiment=NAME`)",
}
#: Plugin kind of each group that selects a plugin.
KIND = {
    "source": "source",
    "preprocessor": "preprocessor",
    "predictor": "predictor",
    "sink": "sink",
}
MARKER = re.compile(
    r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S
)


def _conf_dir() -> Path:
    from pipeline.app.configs import CONF_DIR

    return CONF_DIR


def options(group: str) -> list[str]:
    """The options bulkinfer packages for ``group``, sorted: the file names without ``.yaml``."""
    return sorted(p.stem for p in (_conf_dir() / group).glob("*.yaml"))


def first_sentence(path: Path) -> str:
    """The first sentence of the comment that opens a config file (Hydra's ``# @package``
    line and command lines, indented or starting with a command, left out)."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if text.startswith("@package") or line.startswith("#  ") or not text:
            if words:
                break
            continue
        if re.match(r"(python -m|bulkinfer|vllm|transformers serve)\b", text):
            continue
        words.append(text)
    joined = " ".join(words)
    match = re.search(r"^(.*?[.!?])(\s|$)", joined)
    return (match.group(1) if match else joined).rstrip(".") + "." if joined else ""


@cache
def selected_type(group: str, option: str) -> str | None:
    """The plugin ``type`` an option selects, as Hydra composes it (defaults lists followed)."""
    import hydra
    from omegaconf import OmegaConf

    from pipeline.app.configs import CONF_PACKAGE

    with hydra.initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = hydra.compose(config_name=f"{group}/{option}")
    body = cfg.get(group, cfg)
    found = OmegaConf.to_container(body, resolve=False).get("type")
    return str(found) if found is not None else None


def _summary(kind: str, name: str) -> str:
    """The plugin's one-line summary (its docstring's first line), without importing the
    libraries it runs on (plugin modules import them when they run)."""
    from pipeline.app.plugin_cli import summary
    from pipeline.plan import registry

    return summary(registry.load(kind, name))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def groups_table() -> list[str]:
    """README's table: each group, its options, what it holds."""
    lines = ["| group | options | what it holds |", "| --- | --- | --- |"]
    for group, holds in GROUPS.items():
        names = ", ".join(f"`{o}`" for o in options(group))
        lines.append(f"| `{group}/` | {names} | {_cell(holds)} |")
    return lines


def options_tables() -> list[str]:
    """docs/configs.md's tables: every option of every group, the plugin it selects, what it is."""
    lines: list[str] = []
    for group, holds in GROUPS.items():
        lines += [f"**`{group}/`**: {holds}.", ""]
        if group in KIND:
            lines += ["| option | plugin | what it is |", "| --- | --- | --- |"]
        else:
            lines += ["| option | what it is |", "| --- | --- |"]
        for option in options(group):
            about = _cell(first_sentence(_conf_dir() / group / f"{option}.yaml"))
            if group in KIND:
                plugin = selected_type(group, option)
                if not about and plugin:
                    about = _cell(_summary(KIND[group], plugin))
                lines.append(f"| `{group}={option}` | `{plugin}` | {about} |")
            elif group == "experiment":
                lines.append(f"| `+experiment={option}` | {about} |")
            else:
                lines.append(f"| `{group}={option}` | {about} |")
        lines.append("")
    return lines[:-1]


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return f"`{value}`" if value != {} else "`{}`"


def settings_table() -> list[str]:
    """docs/configs.md's table of ``run.*`` and ``ray.*`` keys: default and meaning."""
    from pipeline.contract.settings import RaySettings, RunSettings

    lines = ["| key | default | what it does |", "| --- | --- | --- |"]
    for prefix, model in (("run", RunSettings), ("ray", RaySettings)):
        for attr, field in model.model_fields.items():
            name = field.alias or attr
            about = " ".join((field.description or "").split())
            lines.append(f"| `{prefix}.{name}` | {_default(field)} | {_cell(about)} |")
    return lines


#: Generated block name -> the function that makes its lines.
BLOCKS = {
    "config-groups": groups_table,
    "config-options": options_tables,
    "run-ray-settings": settings_table,
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current lines."""

    def block(match: re.Match) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            raise KeyError(f"no generated table named {name!r}; known: {', '.join(BLOCKS)}")
        body = "\n".join(BLOCKS[name]()) + "\n"
        return f"{match.group(1)}{body}{match.group(4)}"

    return MARKER.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gen_config_tables")
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is not current")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        path = ROOT / page
        text = path.read_text()
        current = render(text)
        if current != text:
            stale.append(page)
            if not args.check:
                path.write_text(current)
    if args.check and stale:
        print(
            f"stale generated tables in {', '.join(stale)}: run python -m tools.gen_config_tables"
        )
        return 1
    print(("rewrote " if stale else "current: ") + ", ".join(stale or PAGES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
