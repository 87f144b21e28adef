"""Hydra command-line overrides: split into key and value, and plugin keys that need no ``+``.

Hydra refuses to set a key that the composed config does not hold unless the override starts
with ``+``. A config option sets only what differs from the defaults, which live once in the
pydantic models (the plugin's ``Params``, ``StageSettings``, ``RunSettings``, ``RaySettings``),
so ``predictor.stage.on_error=skip`` would need ``+`` on one option and not on another.
:func:`relaxed` writes every override of those keys as ``++`` (set, adding the key if needed);
a misspelt key is still refused, by the pydantic model, with the keys it allows.
"""

from __future__ import annotations

import re

#: Keys whose defaults live in pydantic models, not in YAML: a stage's params and stage settings
#: (``predictor.stage.batch_size``), and the ``run`` and ``ray`` settings.
_STAGE_KEY = re.compile(
    r"^((source|sink|predictor|preprocessors\[\d+\])\.(params|stage)|run|ray)\."
)


def split(override: str) -> tuple[str, str | None]:
    """``"++a.b=1"`` -> ``("a.b", "1")``; ``"~a.b"`` -> ``("a.b", None)``."""
    key, sep, value = override.partition("=")
    return key.lstrip("+~"), (value if sep else None)


def relaxed(overrides: list[str]) -> list[str]:
    """``overrides`` with each plain ``STAGE.params.KEY=...``, ``STAGE.stage.KEY=...``,
    ``run.KEY=...`` and ``ray.KEY=...`` written as ``++``."""
    out = []
    for override in overrides:
        plain = not override.startswith(("+", "~", "-")) and "=" in override
        if plain and _STAGE_KEY.match(override.partition("=")[0]):
            override = "++" + override
        out.append(override)
    return out


def as_written(override: str) -> str:
    """The override as the user wrote it (without the ``++`` :func:`relaxed` added)."""
    key, value = split(override)
    if override.startswith("++") and _STAGE_KEY.match(key):
        return f"{key}={value}"
    return override
