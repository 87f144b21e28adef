"""Write the plugin reference pages (``reference/<kind>s.md``) while ``mkdocs build`` runs.

mkdocs-gen-files runs this script (``mkdocs.yml``: ``plugins.gen-files.scripts``). Each page
holds, for every plugin of that kind that bulkinfer itself registers, exactly the text
``bulkinfer-plugins describe KIND/NAME`` prints: params and stage settings read from the plugins'
pydantic models at build time, so the reference is never written by hand.
"""

from __future__ import annotations

import mkdocs_gen_files

from pipeline.app.plugin_cli import describe_lines
from pipeline.plan import registry

#: kind -> page title
TITLES = {
    "source": "Sources",
    "preprocessor": "Preprocessors",
    "predictor": "Predictors",
    "sink": "Sinks",
}


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
        lines += [f"## `{name}`", "", "```text"]
        lines += describe_lines(f"{kind}/{name}")
        lines += ["```", ""]
    return "\n".join(lines)


for kind in TITLES:
    with mkdocs_gen_files.open(f"reference/{kind}s.md", "w") as out:
        out.write(page(kind))
    mkdocs_gen_files.set_edit_path(f"reference/{kind}s.md", "tools/gen_plugin_reference.py")
