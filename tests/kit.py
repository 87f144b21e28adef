"""Make the test plugin package (tests/plugin_kit) visible, as if pip-installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

KIT_DIR = str(Path(__file__).resolve().parent / "plugin_kit")


def kit_env() -> dict[str, str]:
    """Environment for a subprocess (or a Ray started later) that sees the kit."""
    paths = [KIT_DIR, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def install_kit() -> None:
    """This process and the Ray workers it starts afterwards see the kit's entry points."""
    from pipeline.plan import registry

    os.environ.update(kit_env())
    if KIT_DIR not in sys.path:
        sys.path.insert(0, KIT_DIR)
    registry.refresh()
