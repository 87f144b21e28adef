"""The layers of the core, checked on the source: who may import what, and no circles.

``pipeline/`` is five layers, one folder each; a module imports only modules of its own layer
and of the layers after it in :data:`LAYERS`, never one before it. Every import counts: at the
top of a module, inside a function, or for type checking only. Plugins import only the contract.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "pipeline"
#: The layers, from the top (the application) to the bottom (the plugin contract).
LAYERS = ("app", "execute", "plan", "output", "contract")
#: Modules of ``pipeline/`` itself: the package, ``python -m pipeline``, and the module paths of
#: bulkinfer 0.1 that third-party plugins import (each re-exports its contract module).
TOP = {"__init__", "__main__", "interfaces", "errors", "settings", "schema", "batching", "reach"}
HEAVY = {"torch", "transformers", "xgboost", "sentence_transformers", "sklearn"}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            found.add(base)
            # ``from pipeline.plan import registry`` imports the module pipeline.plan.registry
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


CORE_MODULES = {module_name(p): p for p in modules("pipeline")}


def core_imports(path: Path) -> set[str]:
    """The core modules ``path`` imports (names that are modules of ``pipeline/``)."""
    return {name for name in imports(path) if name in CORE_MODULES}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_core_is_its_layers_and_nothing_else():
    assert sorted(p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__") == (
        sorted([*LAYERS, "samples"])
    )
    assert {p.stem for p in CORE.glob("*.py")} == TOP


@pytest.mark.parametrize(
    "path", [p for p in modules("pipeline") if layer(module_name(p))], ids=module_name
)
def test_imports_run_down_the_layers(path):
    own = LAYERS.index(layer(module_name(path)))
    upward = {m for m in core_imports(path) if (lay := layer(m)) and LAYERS.index(lay) < own}
    assert not upward, f"{module_name(path)} imports a layer above its own: {sorted(upward)}"
    legacy = {m for m in core_imports(path) if m != "pipeline" and not layer(m)}
    assert not legacy, f"{module_name(path)} imports a deprecated path: {sorted(legacy)}"


def test_no_circle_of_modules():
    graph = {
        name: {m for m in core_imports(path) if layer(m) and m != name}
        for name, path in CORE_MODULES.items()
        if layer(name)
    }
    # a package __init__ is imported with each of its modules; only real edges count
    graph = {
        k: {m for m in v if not CORE_MODULES[m].name == "__init__.py"} for k, v in graph.items()
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + (name,)
            raise AssertionError("modules import each other: " + " -> ".join(cycle))
        if name in done:
            return
        for nxt in sorted(graph.get(name, ())):
            visit(nxt, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


@pytest.mark.parametrize("path", modules("pipeline"), ids=module_name)
def test_core_never_imports_model_libraries(path):
    assert not {name.split(".")[0] for name in imports(path)} & HEAVY


@pytest.mark.parametrize("path", modules("pipeline"), ids=module_name)
def test_only_the_app_layer_knows_hydra(path):
    uses_hydra = any(name.split(".")[0] in ("hydra", "omegaconf") for name in imports(path))
    assert not uses_hydra or layer(module_name(path)) == "app"


@pytest.mark.parametrize(
    "path",
    [p for p in modules("pipeline") if layer(module_name(p)) in ("plan", "output")],
    ids=module_name,
)
def test_plan_and_output_import_neither_ray_nor_hydra(path):
    roots = {name.split(".")[0] for name in imports(path)}
    assert not roots & {"ray", "hydra", "omegaconf"}


def import_time_imports(path: Path) -> set[str]:
    """What importing ``path`` imports: its top-level imports, not those for type checking or
    inside functions."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in modules("pipeline") if layer(module_name(p)) == "contract"],
    ids=module_name,
)
def test_importing_the_contract_imports_no_ray(path):
    """A plugin module imports the contract on machines without Ray (the GPU check's)."""
    assert not {name.split(".")[0] for name in import_time_imports(path)} & {"ray", "hydra"}


def test_private_ray_apis_are_used_in_one_module_only():
    for path in modules("pipeline") + modules("plugins"):
        private = {n for n in imports(path) if n.startswith(("ray._", "ray.data._"))}
        text = path.read_text()
        private |= {m for m in ("ray._private", "ray._raylet", "._logical_plan") if m in text}
        if path.name != "ray_internals.py":
            assert not private, f"{path} uses {private}"


@pytest.mark.parametrize("path", modules("plugins"), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_use_only_the_contract(path):
    core = {name for name in imports(path) if name.split(".")[0] == "pipeline"}
    outside = {n for n in core if n != "pipeline" and layer(n) != "contract"}
    assert not outside, f"{path} imports {sorted(outside)}"


def mapped(markdown: Path, after: str = "") -> set[str]:
    """The paths a page's first code block (after the line ``after``) maps: ``name/`` folders
    and ``name.py`` modules, nested by two spaces of indentation per level."""
    text = markdown.read_text()
    block = text[text.index(after) :].split("```\n", 2)[1]
    found: set[str] = set()
    folders: list[str] = []
    for line in block.splitlines():
        indent = (len(line) - len(line.lstrip(" "))) // 2
        names = [w for w in line.split() if w.endswith(("/", ".py")) and "/" not in w[:-1]]
        if not names or line.startswith(" " * 26):  # a description's continuation line
            continue
        del folders[indent:]
        for name in names:
            found.add("/".join([*folders, name]).rstrip("/"))
        if names[0].endswith("/"):
            folders.append(names[0].rstrip("/"))
    return found


def test_the_architecture_page_maps_every_module_of_the_core_and_nothing_else():
    on_disk = {
        str(p.relative_to(ROOT))
        for p in CORE.rglob("*")
        if "__pycache__" not in p.parts
        and p.name != "__init__.py"
        and (p.suffix == ".py" or (p.is_dir() and p.parent == CORE))
    } | {"pipeline"}
    listed = {p for p in mapped(ROOT / "docs" / "architecture.md") if p.startswith("pipeline")}
    assert listed == on_disk


def test_the_readme_maps_every_layer():
    listed = mapped(ROOT / "README.md", after="## Architecture")
    assert {f"pipeline/{name}" for name in LAYERS} <= listed
    assert {"conf", "plugins", "tests"} <= listed
