"""The layering rules of DESIGN.md, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "transformers", "xgboost", "sentence_transformers", "sklearn"}
#: The public contract of the core for plugins: the base classes, settings and errors, Arrow
#: type helpers and batch helpers; built-in plugins may also use the one module that holds every
#: private Ray API (pipeline.ray_internals).
PLUGIN_MAY_IMPORT = {
    "pipeline.interfaces",
    "pipeline.settings",
    "pipeline.errors",
    "pipeline.schema",
    "pipeline.batching",
    "pipeline.ray_internals",
    "pipeline.reach",
}


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


PLANNING = ("plan.py", "budget.py", "schema.py", "fingerprints.py", "commit.py", "staging.py")


@pytest.mark.parametrize("name", PLANNING)
def test_planning_imports_neither_ray_nor_hydra(name):
    roots = {name.split(".")[0] for name in imports(ROOT / "pipeline" / name)}
    assert not roots & {"ray", "hydra", "omegaconf"}


def test_private_ray_apis_are_used_in_one_module_only():
    for path in modules("pipeline") + modules("plugins"):
        private = {n for n in imports(path) if n.startswith(("ray._", "ray.data._"))}
        text = path.read_text()
        private |= {m for m in ("ray._private", "ray._raylet", "._logical_plan") if m in text}
        if path.name != "ray_internals.py":
            assert not private, f"{path} uses {private}"


@pytest.mark.parametrize("path", modules("pipeline"), ids=lambda p: p.name)
def test_core_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 400, f"{path.name} is over 400 lines"


@pytest.mark.parametrize("path", modules("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_only_the_public_contract_of_the_core(path):
    core = {name for name in imports(path) if name.split(".")[0] == "pipeline"}
    assert core <= PLUGIN_MAY_IMPORT, f"{path} imports {core - PLUGIN_MAY_IMPORT}"
