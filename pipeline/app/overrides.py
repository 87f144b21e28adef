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

from pipeline.contract.settings import JobConfig
from pipeline.plan.validation import join_key, unknown_key

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


def one_line(exc: Exception) -> str:
    """A Hydra composition or override-parsing error as one line: the override or the config
    group it concerns, the cause, and what is allowed (no search path, no hint about
    HYDRA_FULL_ERROR)."""
    import difflib
    import re

    text = str(exc).split("Config search path:")[0]
    override = getattr(exc, "override", None)
    if override is not None:
        cause = text.split("\nSee https://")[0].strip()
        # the lexer's caret line points into the override: one line without it
        cause = " ".join(line.strip() for line in cause.splitlines() if line.strip(" ^"))
        line = str(getattr(override, "input_line", override))
        override = as_written(line)
        cause = cause.replace(line, override)
        return (
            f"cannot parse the override {override!r}: {cause} (put a value with "
            "spaces, braces, commas or '=' in quotes: 'key=\"a value: {x}\"')"
        )
    # a key the config does not hold (a config group missing from the defaults list has its
    # own message: "No match in the defaults list ... use +experiment=x")
    refused = re.match(r"Could not override '([^']+)'\.\s+To append to your config", text)
    unknown = _unknown_key(refused.group(1)) if refused else None
    if unknown is not None:
        return unknown
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    available = re.findall(r"^\t(\S+)$", text, flags=re.M)
    if missing and available:
        group, name = missing.groups()
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (
            f"{group}: Could not find '{group}/{name}' in the config group '{group}'.{hint} "
            f"Available: {', '.join(available)}."
        )
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _unknown_key(key: str) -> str | None:
    """Hydra's "Could not override 'sink.parms.path'" (a key the composed config does not hold)
    as the job's own check words it: ``sink.parms: unknown key (did you mean 'params'?);
    allowed keys: ...``. None for keys outside the job's settings (``hydra.*``) and for keys
    whose parts all exist (Hydra's message then stands)."""
    parts: list[str | int] = [
        int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", key)
    ]
    if not parts or parts[0] == "hydra":
        return None
    found = unknown_key(JobConfig, parts)
    if found is None:
        return None
    position, message = found
    return f"{join_key('', parts[: position + 1])}: {message}"
