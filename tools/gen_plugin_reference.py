"""Write the plugin reference pages (``reference/<kind>s.md``) while ``mkdocs build`` runs.

mkdocs-gen-files runs this script (``mkdocs.yml``: ``plugins.gen-files.scripts``). Each page
holds, for every plugin of that kind that bulkinfer itself registers, what
``bulkinfer-plugins describe KIND/NAME`` prints (the same rows, from the same functions), as
tables that wrap on a page: params and stage settings read from the plugins' pydantic models at
build time, so the reference is never written by hand. A plugin module imports
without the libraries it runs on (they are imported when the plugin runs), so the site builds
with the ``docs`` extra alone; a plugin whose libraries are not installed here says which extra
installs them. The generated tables of docs/configs.md (:mod:`tools.gen_config_tables`) are
written current into the site too.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import mkdocs_gen_files

from pipeline.app.plugin_cli import example_config, field_rows, summary, to_yaml
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import MapStage
from pipeline.plan import registry

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after site-packages: bulkinfer itself comes from the install

from tools.gen_config_tables import render  # noqa: E402

#: kind -> page title
TITLES = {
    "source": "Sources",
    "preprocessor": "Preprocessors",
    "predictor": "Predictors",
    "sink": "Sinks",
}


def _cell(text: str, code: bool = False) -> str:
    """Text for a Markdown table cell (HTML-escaped, pipes kept out of the cell syntax)."""
    text = html.escape(" ".join(text.split()), quote=False).replace("|", "&#124;")
    return f"<code>{text}</code>" if code and text else text


def _fields(rows: list[list[str]]) -> list[str]:
    """``field_rows`` (name, type, default, description) as a Markdown table that wraps."""
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- | --- |"]
    for name, kind, default, about in body:
        cells = [_cell(name, True), _cell(kind, True), _cell(default, True), _cell(about)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def section(kind: str, name: str) -> list[str]:
    """One plugin: what ``bulkinfer-plugins describe KIND/NAME`` prints, as a page section (its
    params and stage settings as tables that wrap at any width, the example config as YAML)."""
    info = registry.info(kind, name)
    plugin = registry.load(kind, name, require_extras=False)
    lines = [f"## `{name}`", ""]
    if summary(plugin):
        lines += [summary(plugin), ""]
    lines += [f"{kind} `{name}` from {info.package} (`{info.value}`).", ""]
    if plugin.extras:
        extras = ",".join(plugin.extras)
        modules = ", ".join(f"`{m}`" for mods in plugin.extras.values() for m in mods)
        lines += [f"Runs on {modules}: `pip install '{info.distribution}[{extras}]'`.", ""]
    missing = registry.missing_extras(plugin)
    if missing:
        absent = ", ".join(m for mods in missing.values() for m in mods)
        lines += [f"(Documented from its params: {absent} not installed where this was built.)", ""]
    lines += ["**params**", "", *_fields(field_rows(plugin.Params)), ""]
    if issubclass(plugin, MapStage):
        stage = plugin.default_stage.model_dump()
        lines += [f"**stage** (this plugin's defaults; set any under `{kind}.stage`)", ""]
        lines += [*_fields(field_rows(StageSettings, stage)), ""]
    snippet = to_yaml(example_config(kind, name, plugin)).rstrip()
    lines += [f"A config to start from (e.g. `conf/{kind}/my_{name}.yaml`):", ""]
    lines += ["```yaml", snippet, "```", ""]
    return lines


def page(kind: str) -> str:
    """The Markdown page for ``kind``: one section per plugin bulkinfer registers."""
    names = [n for n, info in registry.available(kind).items() if info.distribution == "bulkinfer"]
    lines = [
        f"# {TITLES[kind]}",
        "",
        f"Every {kind} plugin bulkinfer ships, as `bulkinfer-plugins describe {kind}/NAME`",
        "prints it: generated from the plugins' pydantic models when this site is built. For",
        "other packages' plugins, run `bulkinfer-plugins list` and `describe` where they are",
        "installed.",
        "",
    ]
    for name in names:
        lines += section(kind, name)
    return "\n".join(lines)


for kind in TITLES:
    with mkdocs_gen_files.open(f"reference/{kind}s.md", "w") as out:
        out.write(page(kind))
    mkdocs_gen_files.set_edit_path(f"reference/{kind}s.md", "tools/gen_plugin_reference.py")

with mkdocs_gen_files.open("configs.md", "w") as out:
    out.write(render((ROOT / "docs" / "configs.md").read_text()))
