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
from typing import Any

from pipeline.contract.errors import ConfigError


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


#: Lance's (object_store's) S3 storage options -> pyarrow.fs.S3FileSystem arguments, so the job
#: store beside the dataset reaches the same endpoint with the same credentials.
S3_OPTIONS = {
    "aws_endpoint": "endpoint_override",
    "endpoint": "endpoint_override",
    "aws_endpoint_url": "endpoint_override",
    "aws_access_key_id": "access_key",
    "access_key_id": "access_key",
    "aws_secret_access_key": "secret_key",
    "secret_access_key": "secret_key",
    "aws_session_token": "session_token",
    "session_token": "session_token",
    "aws_region": "region",
    "region": "region",
}


def s3_options(options: dict[str, str]) -> dict[str, Any]:
    """``pyarrow.fs.S3FileSystem`` keyword arguments for Lance's S3 ``storage_options``
    (``allow_http: "true"`` becomes ``scheme="http"``); other options are Lance's alone."""
    mapped: dict[str, Any] = {S3_OPTIONS[k]: v for k, v in options.items() if k in S3_OPTIONS}
    endpoint = mapped.get("endpoint_override", "")
    if str(options.get("allow_http", "")).lower() == "true" or endpoint.startswith("http://"):
        mapped["scheme"] = "http"
    if "://" in endpoint:
        mapped["endpoint_override"] = endpoint.split("://", 1)[1]
    return mapped
