"""Write a real installed-distribution record (``*.dist-info``) into a folder for a subprocess.

Put the folder on ``PYTHONPATH`` and ``importlib.metadata`` sees a distribution with these entry
points, exactly as after ``pip install``: a cheap way to test many package combinations without
building wheels.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_dist(
    root: Path,
    name: str,
    entry_points: dict[str, dict[str, str]],
    files: dict[str, str] | None = None,
) -> Path:
    """Create distribution ``name`` 0.1 under ``root`` with ``entry_points`` and package ``files``.

    ``files`` maps paths relative to ``root`` (e.g. ``"team_b/predictor/x.yaml"``) to contents.
    """
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{ep} = {value}" for ep, value in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for rel, text in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def env_with(*paths: Path) -> dict[str, str]:
    """Environment for a subprocess that also sees the distributions under ``paths``."""
    extra = [str(p) for p in paths]
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(extra + ([old] if old else []))}
