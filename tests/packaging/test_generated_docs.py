"""The tables of config groups, options and settings in README.md and docs/configs.md are
generated (tools/gen_config_tables.py) and must be current: a new option, plugin or setting
fails here until ``python -m tools.gen_config_tables`` rewrites them."""

from __future__ import annotations

import pytest
from wheel_env import ROOT

from tools.gen_config_tables import BLOCKS, MARKER, PAGES, options, render


@pytest.mark.parametrize("page", PAGES)
def test_the_generated_tables_are_current(page):
    text = (ROOT / page).read_text()
    assert render(text) == text, f"stale tables in {page}: run python -m tools.gen_config_tables"


def test_every_generated_block_is_on_a_page_and_every_page_has_one():
    found = {m.group("name") for page in PAGES for m in MARKER.finditer((ROOT / page).read_text())}
    assert found == set(BLOCKS)


def test_the_readme_lists_every_option_bulkinfer_packages():
    readme = (ROOT / "README.md").read_text()
    for group in ("source", "preprocessor", "predictor", "sink", "ray", "experiment"):
        names = options(group)
        assert names == sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{group}/` |"))
        assert all(f"`{name}`" in row for name in names), group
