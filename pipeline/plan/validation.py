"""Turn pydantic errors and unsafe config shapes into :class:`ConfigError` with key paths."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.contract.errors import ConfigError
from pipeline.contract.secrets import is_secret_key, mask_secrets

M = TypeVar("M", bound=BaseModel)

#: Keys that would make a config choose Python code to import; plugins are chosen by name only.
FORBIDDEN_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


#: Parts of a pydantic error location that name a union member, not a config key.
_UNION_TAGS = {"int", "float", "str", "bool", "none", "list", "dict"}


def _is_union_tag(part: str) -> bool:
    return part in _UNION_TAGS or "[" in part or part[:1].isupper()


def join_key(prefix: str, loc: tuple[Any, ...] | list[Any]) -> str:
    """Dotted key path: ``join_key("predictor.stage", ("concurrency", "min"))``.

    gives ``predictor.stage.concurrency.min``; list positions render as ``[i]``.
    """
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif not _is_union_tag(str(part)):
            key = f"{key}.{part}" if key else str(part)
    return key


def _relevant(errors: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """One union value fails against every member; keep the member errors that say why."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        by_key.setdefault(join_key(prefix, error["loc"]), []).append(error)
    kept = []
    for group in by_key.values():
        specific = [e for e in group if not e["type"].endswith(("_type", "_parsing"))]
        kept += specific or group[:1]
    return kept


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds: ``StageConfig``, ``StageConfig | None`` and
    ``list[StageConfig]`` all give ``StageConfig``; None for plain values and mappings."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def unknown_key(model: type[BaseModel], loc: Sequence[Any]) -> tuple[int, str] | None:
    """The first part of the key path ``loc`` (names, and ints for list positions) that
    ``model``, or the model of a field on the way, does not have: its position in ``loc`` and
    a message naming the closest key allowed there and all of them. None when every part is
    allowed, or the path leaves the models (a plugin's ``params`` are a mapping here)."""
    current: type[BaseModel] | None = model
    for position, part in enumerate(loc):
        if isinstance(part, int) or _is_union_tag(str(part)):
            continue
        if current is None:
            return None
        fields = list(current.model_fields)
        if part not in fields:
            close = difflib.get_close_matches(str(part), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return position, f"unknown key{hint}; allowed keys: {', '.join(fields)}"
        current = _model_of(current.model_fields[part].annotation)
    return None


def _describe(error: dict[str, Any], model: type[BaseModel], key: str) -> str:
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        unknown = unknown_key(model, error["loc"])
        msg = unknown[1] if unknown is not None else "unknown key"
    elif "input" in error and error["type"] != "missing" and not is_secret_key(key):
        # never echo a value under a secret-looking key, nor one nested in what is echoed
        msg += f" (got {mask_secrets(error['input'])!r})"
    return msg


def validate_model(model: type[M], data: Any, key: str) -> M:
    """Validate ``data`` against ``model``; errors name the full key path under ``key``."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {type(data).__name__} {data!r}", key=key)
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        errors = _relevant(exc.errors(), key)
        lines = []
        for error in errors:
            full_key = join_key(key, error["loc"])
            lines.append(f"{full_key}: {_describe(error, model, full_key)}")
        first_key = join_key(key, errors[0]["loc"])
        message = lines[0].split(": ", 1)[1] if len(lines) == 1 else "\n  " + "\n  ".join(lines)
        raise ConfigError(message, key=first_key) from None


def reject_code_references(config: Any, key: str = "") -> None:
    """Refuse Hydra instantiate keys anywhere: a config must not choose code to import."""
    if isinstance(config, Mapping):
        for name, value in config.items():
            child = join_key(key, (name,))
            if name in FORBIDDEN_KEYS:
                raise ConfigError(
                    f"{name} is not allowed: configs select plugins by registered name ('type'), "
                    "never by Python path. To use your own class, register it under an entry-point "
                    "group such as bulkinfer.predictors in your package's pyproject.toml.",
                    key=child,
                )
            reject_code_references(value, child)
    elif isinstance(config, list):
        for index, value in enumerate(config):
            reject_code_references(value, join_key(key, (index,)))
