"""Credentials from environment variables named in the config, never written in it.

A sink's params name variables, e.g. ``password_env: PGPASSWORD`` or
``catalog_env: {s3.secret-access-key: AWS_SECRET_ACCESS_KEY}``; the values are read on the
driver where the job runs and handed to its write tasks in memory (:class:`Secrets`), so the
cluster's nodes need not have them. They never enter the plan, the job record, the metrics or a
message: messages show the variable's name only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.errors import ConfigError


def read_env(name: str, *, key: str) -> str:
    """The value of environment variable ``name``.

    Raises :class:`ConfigError` (with ``key``, the config key that names the variable) when it
    is unset or empty.
    """
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"environment variable {name} is not set (it holds a credential this sink needs; "
            "set it where the job runs)",
            key=key,
        )
    return value


def read_env_map(names: Mapping[str, str], *, key: str) -> dict[str, str]:
    """``{property: value of the variable it names}`` for a ``{property: variable}`` map.

    Raises :class:`ConfigError` keyed ``<key>.<property>`` for an unset variable.
    """
    return {prop: read_env(var, key=f"{key}.{prop}") for prop, var in names.items()}


class Secrets:
    """Values read from the environment on the driver, for the write tasks; shown as ``***``."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def values(self) -> dict[str, str]:
        return dict(self._values)

    def __repr__(self) -> str:
        return "Secrets(***)"
