"""The layering rules of DESIGN.md, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "transformers", "xgboost", "sentence_transformers", "sklearn"}
PLUGIN_MAY_IMPORT = {"pipeline.interfaces", "pipeline.settings", "pipeline.errors"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("pipeline"), ids=lambda p: p.name)
def test_core_never_imports_model_libraries(path):
    assert not {name.split(".")[0] for name in imports(path)} & HEAVY


@pytest.mark.parametrize("path", modules("pipeline"), ids=lambda p: p.name)
def test_only_the_cli_module_knows_hydra(path):
    uses_hydra = any(name.split(".")[0] == "hydra" for name in imports(path))
    assert not uses_hydra or path.name in {"__main__.py", "searchpath.py", "sweep.py"}


def test_planning_imports_neither_ray_nor_hydra():
    roots = {name.split(".")[0] for name in imports(ROOT / "pipeline" / "plan.py")}
    assert not roots & {"ray", "hydra", "omegaconf"}


@pytest.mark.parametrize("path", modules("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_only_the_public_contract_of_the_core(path):
    core = {name for name in imports(path) if name.split(".")[0] == "pipeline"}
    assert core <= PLUGIN_MAY_IMPORT, f"{path} imports {core - PLUGIN_MAY_IMPORT}"
