"""An Iceberg table (through pyiceberg) as a staged target: Parquet files per unit, one commit.

Each write task writes Parquet files (typed as :mod:`.iceberg_types` says, without field ids)
into the run's own folder under the table's data location,
``<table location>/data/bulkinfer-<run id>/<unit>/``. Nothing refers to them until
:meth:`IcebergTarget.publish` adds them all in one table transaction with pyiceberg's
``add_files`` (the two-stage write pyiceberg documents for retry-safe writes): one ``append``
snapshot, preceded in ``overwrite`` mode by a ``delete`` snapshot of the old rows, both made
current by a single catalog commit. A table that does not exist yet is created in that same
commit (a create-table transaction), so a failed job leaves no empty table behind. Files
without field ids are read through the table's name mapping, which ``add_files`` sets.

Why under the table's location: ``add_files`` registers files where they are (it does not copy
them), so staging anywhere else would leave the published table's data outside its location,
beyond the reach of its storage credentials, retention and ``purge``. Why a folder per run and
unit: a crashed unit's files are found by their folder, receipt or not, and removed exactly.

Each snapshot of the commit carries ``bulkinfer.run-id`` in its summary; a repeated publish walks
the table's history back to the snapshot the job began from, finds it, and commits nothing.

The job record and the unit markers go beside the table's data,
``<table location>.__bulkinfer_staging/`` (opened through pyiceberg's FileIO with the catalog's
properties). Checks (dry runs too) open the catalog without creating anything: a SQL catalog
whose SQLite file does not exist has no tables, and its tables are not created until a publish.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import uuid
from collections.abc import Iterable
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.sink import JOB_KEY, StoreFolder
from plugins.sinks.targets.env import Secrets, read_env_map
from plugins.sinks.targets.iceberg_types import iceberg_arrow_schema
from plugins.sinks.targets.protocol import (
    UnitWriter,
    WriterTarget,
    conform,
    misfits,
    resolve_types,
    schema_from_text,
    schema_to_text,
)

RUN_PROPERTY = "bulkinfer.run-id"
ROWS_PROPERTY = "bulkinfer.rows"
#: Snapshot summary property that names the job (its config and input) which made it.
JOB_PROPERTY = "bulkinfer.job"
KEY = "sink.params"
STAGING_SUFFIX = ".__bulkinfer_staging"


class IcebergParams(PluginParams):
    catalog: dict[str, str] = Field(
        description="Catalog properties as pyiceberg's load_catalog takes them, e.g. "
        "{type: sql, uri: 'sqlite:///cat.db', warehouse: 'file:///wh'} or {type: rest, uri: ...}."
    )
    catalog_name: str = Field(default="default", description="The catalog's name.")
    catalog_env: dict[str, str] = Field(
        default_factory=dict,
        description="Catalog properties read from environment variables: {property: VARIABLE} "
        "(credentials, tokens, a catalog URI that holds a password).",
    )
    table: str = Field(description="namespace.name (a nested namespace: a.b.name).")
    mode: Literal["append", "overwrite"] = Field(
        default="append",
        description="append: add this run's rows; overwrite: replace the table's rows (its "
        "history keeps the old snapshots).",
    )
    location: str | None = Field(
        default=None, description="Location of a table this job creates (default: catalog's)."
    )
    table_properties: dict[str, str] = Field(
        default_factory=dict, description="Properties of a table this job creates."
    )
    max_rows_per_file: int = Field(
        default=1_000_000, gt=0, description="Rows per Parquet data file at most."
    )
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="Arrow types to store columns as, {column: type}: required for a column "
        "declared null (a type only the model can tell); casts others.",
    )

    @field_validator("catalog")
    @classmethod
    def _no_password_in_a_url(cls, catalog: dict[str, str]) -> dict[str, str]:
        from urllib.parse import urlsplit

        for prop, value in catalog.items():
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                raise ValueError(
                    f"catalog property {prop} holds a URL with a password: name an environment "
                    f"variable holding the whole URL in sink.params.catalog_env.{prop} instead"
                )
        return catalog


def _identifier(table: str) -> tuple[tuple[str, ...], str]:
    parts = table.split(".")
    if len(parts) < 2 or not all(parts):
        raise DataError(
            f"table {table!r} must be namespace.name (e.g. default.predictions)",
            key=f"{KEY}.table",
        )
    return tuple(parts[:-1]), parts[-1]


def _folder_name(unit_id: str) -> str:
    """A unit id as one safe path segment."""
    import hashlib

    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", unit_id) and unit_id not in (".", ".."):
        return unit_id
    return "u-" + hashlib.sha256(unit_id.encode()).hexdigest()[:16]


def _catalog_properties(params: IcebergParams) -> dict[str, str]:
    env = read_env_map(params.catalog_env, key=f"{KEY}.catalog_env")
    return {**params.catalog, **env}


def _filesystem(properties: dict[str, str], location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for ``location``, as pyiceberg's own FileIO opens it."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    scheme, netloc, path = PyArrowFileIO.parse_location(location)
    return PyArrowFileIO(properties).fs_by_scheme(scheme, netloc), path


class IcebergUnitWriter(UnitWriter):
    """Writes one write task's rows as Parquet files in the unit's folder (in a Ray task)."""

    def __init__(
        self, params: IcebergParams, schema: pa.Schema, folder: str, properties: Secrets
    ) -> None:
        self.params, self.schema, self.folder = params, schema, folder
        self.properties = properties

    def write(self, tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        fs, folder = _filesystem(self.properties.values(), self.folder)
        parts: list[dict[str, Any]] = []
        writer, stream, name, rows = None, None, "", 0

        def close() -> None:
            writer.close()
            stream.close()
            size = fs.get_file_info(f"{folder}/{name}").size
            parts.append({"rows": rows, "path": f"{self.folder}/{name}", "bytes": size})

        for table in tables:
            table = conform(table, self.schema)
            start = 0
            while start < table.num_rows:
                if writer is None:
                    fs.create_dir(folder, recursive=True)
                    name = f"{uuid.uuid4().hex}.parquet"
                    stream = fs.open_output_stream(f"{folder}/{name}")
                    writer, rows = pq.ParquetWriter(stream, self.schema), 0
                chunk = table.slice(start, self.params.max_rows_per_file - rows)
                writer.write_table(chunk)
                rows += chunk.num_rows
                start += chunk.num_rows
                if rows >= self.params.max_rows_per_file:
                    close()
                    writer = None
        if writer is not None:
            close()
        return parts


def _missing_sqlite(properties: dict[str, str]) -> bool:
    """A SQL catalog on a SQLite file that does not exist (opening it would create it)."""
    if properties.get("type") != "sql":
        return False
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(properties.get("uri", ""))
    except sa.exc.ArgumentError:
        return False
    database = url.database or ""
    return (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not os.path.exists(database)
    )


class IcebergTarget(WriterTarget):
    """``sink=iceberg``: see the module docstring."""

    key = f"{KEY}.table"

    def __init__(self, params: IcebergParams) -> None:
        self.params = params
        self.namespace, self.name = _identifier(params.table)
        self.identifier = (*self.namespace, self.name)
        self.location = params.table

    # -- helpers --
    def catalog(self, readonly: bool = False) -> Any:
        """The catalog; ``readonly``: create none of its own tables (None: no catalog yet)."""
        from pyiceberg.catalog import load_catalog

        properties = _catalog_properties(self.params)
        if readonly:
            if _missing_sqlite(properties):
                return None
            properties = {**properties, "init_catalog_tables": "false"}
        return load_catalog(self.params.catalog_name, **properties)

    def load(self, catalog: Any | None = None) -> Any:
        """The table, or None if the catalog has no such table (or no tables yet)."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        catalog = catalog or self.catalog(readonly=True)
        if catalog is None:
            return None
        try:
            return catalog.load_table(self.identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None
        except Exception as exc:  # a SQL catalog whose tables are not created yet
            if type(exc).__name__ in ("OperationalError", "ProgrammingError"):
                return None
            raise

    def _schema(self, schema: pa.Schema) -> pa.Schema:
        schema = resolve_types(schema, self.params.column_types, "Iceberg")
        return iceberg_arrow_schema(schema, key="sink")

    def job_store(self) -> StoreFolder:
        """``<table location>.__bulkinfer_staging`` (where the table goes if it is new)."""
        catalog = self.catalog(readonly=True)
        table = self.load(catalog) if catalog is not None else None
        if table is not None:
            location = table.location().rstrip("/")
        else:
            location = self._new_location(catalog, pa.schema([("id", pa.int64())]))
        root = location + STAGING_SUFFIX
        fs, path = _filesystem(_catalog_properties(self.params), root)
        return StoreFolder(fs, path, root)

    def _new_location(self, catalog: Any, schema: pa.Schema) -> str:
        """Where the catalog would put the table if this job created it (creates nothing)."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        if self.params.location:
            return self.params.location.rstrip("/")
        try:
            if catalog is not None:
                staged = catalog.create_table_transaction(self.identifier, schema=schema)
                return staged.table_metadata.location.rstrip("/")
        except NoSuchNamespaceError:
            pass  # created at publish; the warehouse convention says where the table goes
        except Exception as exc:  # a SQL catalog whose tables are not created yet
            if type(exc).__name__ not in ("OperationalError", "ProgrammingError"):
                raise
        warehouse = _catalog_properties(self.params).get("warehouse")
        if not warehouse:
            raise DataError(
                f"the catalog names no warehouse, so where table {self.params.table} goes is "
                "unknown until its namespace exists: set sink.params.location",
                key=f"{KEY}.location",
            )
        return f"{warehouse.rstrip('/')}/{'.'.join(self.namespace)}/{self.name}"

    # -- the steps --
    def check(self, schema: pa.Schema, resuming: bool = False) -> None:
        schema = self._schema(schema)
        table = self.load()
        if table is None:
            return
        if table.spec().fields:
            raise DataError(
                f"table {self.params.table} is partitioned ({table.spec()}); this sink writes "
                "unpartitioned files. Write to an unpartitioned table.",
                key=f"{KEY}.table",
            )
        problems = self._misfits(table, schema)
        if problems:
            raise DataError(
                f"the output does not fit table {self.params.table}: {'; '.join(problems)}. "
                "Give the columns the table's names and types (cast with "
                "sink.params.column_types), leave the others out before the sink, or write "
                "another table (sink.params.table).",
                key=f"{KEY}.table",
            )

    def _misfits(self, table: Any, schema: pa.Schema) -> list[str]:
        """What keeps rows of ``schema`` out of ``table``, one phrase each (see
        :func:`~plugins.sinks.targets.protocol.misfits`), then pyiceberg's own check (the rules
        ``add_files`` applies), its first line without its hint and its printed report."""
        import contextlib
        import io

        from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible

        existing = table.schema()
        problems = []
        lacking = [f.name for f in existing.fields if f.required and f.name not in schema.names]
        if lacking:
            problems.append(f"the output lacks {', '.join(lacking)}, which the table requires")
        problems += misfits(schema, existing.as_arrow(), "the table")
        nullable = [
            f.name
            for f in existing.fields
            if f.required and f.name in schema.names and schema.field(f.name).nullable
        ]
        if nullable:
            problems.append(
                f"the table requires values in {', '.join(nullable)}, and the output's may be null"
            )
        if problems:
            return problems
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pyiceberg prints a report table
                _check_pyarrow_schema_compatible(
                    existing, schema, format_version=table.format_version
                )
        except ValueError as exc:
            first = (str(exc).strip().splitlines() or ["its columns differ"])[0]
            return [first.split(" Update the schema first")[0].rstrip(":. ")]
        return []

    def begin(self, run_id: str, schema: pa.Schema) -> dict[str, Any]:
        schema = self._schema(schema)
        catalog = self.catalog(readonly=True)  # nothing is created before the publish
        table = self.load(catalog) if catalog is not None else None
        if table is not None:
            location = table.location().rstrip("/")
            snapshot = table.current_snapshot()
            base = snapshot.snapshot_id if snapshot is not None else None
        else:
            location, base = self._new_location(catalog, schema), None
        return {
            "run_id": run_id,
            "schema": schema_to_text(schema),
            "location": location,
            "data_prefix": f"{location}/data/bulkinfer-{run_id}",
            "base_snapshot": base,
        }

    def writer(self, state: dict[str, Any], unit_id: str) -> IcebergUnitWriter:
        folder = f"{state['data_prefix']}/{_folder_name(unit_id)}"
        properties = Secrets(_catalog_properties(self.params))
        return IcebergUnitWriter(self.params, schema_from_text(state["schema"]), folder, properties)

    def published_snapshot(self, table: Any, state: dict[str, Any]) -> int | None:
        """The snapshot this run's commit made, walking back to where the job began."""
        snapshot = table.current_snapshot()
        while snapshot is not None and snapshot.snapshot_id != state["base_snapshot"]:
            if snapshot.summary and snapshot.summary.get(RUN_PROPERTY) == state["run_id"]:
                return snapshot.snapshot_id
            parent = snapshot.parent_snapshot_id
            snapshot = table.snapshot_by_id(parent) if parent is not None else None
        return None

    def last_job(self) -> dict[str, str] | None:
        table = self.load()
        snapshot = table.current_snapshot() if table is not None else None
        summary = (snapshot.summary if snapshot is not None else None) or {}
        if summary.get(JOB_PROPERTY) is None:
            return None
        when = _dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, _dt.timezone.utc)
        return {
            "job": summary.get(JOB_PROPERTY),
            "run_id": summary.get(RUN_PROPERTY) or "",
            "at": f"snapshot {snapshot.snapshot_id} ({when.isoformat(timespec='seconds')})",
        }

    def publish(self, state: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, Any]:
        from pyiceberg.exceptions import CommitFailedException, TableAlreadyExistsError
        from pyiceberg.expressions import AlwaysTrue

        rows = sum(r["rows"] for r in receipts)
        properties = {RUN_PROPERTY: state["run_id"], ROWS_PROPERTY: str(rows)}
        if state.get(JOB_KEY):
            properties[JOB_PROPERTY] = state[JOB_KEY]
        paths = [part["path"] for r in receipts for part in r["parts"]]
        catalog = self.catalog()
        for attempt in range(2):  # a second try if the table was created under our feet
            table = self.load(catalog)
            if table is not None:
                done = self.published_snapshot(table, state)
                if done is not None:
                    return {"rows": rows, "already": True, "snapshot_id": done}
                transaction = table.transaction()
                if self.params.mode == "overwrite" and table.current_snapshot() is not None:
                    transaction.delete(AlwaysTrue(), snapshot_properties=properties)
            else:
                catalog.create_namespace_if_not_exists(self.namespace)
                transaction = catalog.create_table_transaction(
                    self.identifier,
                    schema=schema_from_text(state["schema"]),
                    location=state["location"],
                    properties=self.params.table_properties,
                )
            # Our files are new by construction (a folder per run); the run-id check above
            # stands in for add_files' scan of every file the table references.
            transaction.add_files(
                paths, snapshot_properties=properties, check_duplicate_files=False
            )
            try:
                transaction.commit_transaction()
            except (TableAlreadyExistsError, CommitFailedException):
                if table is None and attempt == 0:
                    continue
                raise
            table = self.load(catalog)
            return {
                "rows": rows,
                "already": False,
                "snapshot_id": table.current_snapshot().snapshot_id,
            }
        raise AssertionError("unreachable")

    def _delete_folder(self, location: str) -> None:
        import pyarrow.fs

        fs, path = _filesystem(_catalog_properties(self.params), location)
        if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(path)

    def discard(
        self, state: dict[str, Any], unit_ids: list[str], receipts: list[dict[str, Any]]
    ) -> None:
        """Delete the folders of ``unit_ids`` (with or without a receipt)."""
        for unit_id in unit_ids:
            self._delete_folder(f"{state['data_prefix']}/{_folder_name(unit_id)}")

    def abandon(self, state: dict[str, Any]) -> None:
        """Delete the run's whole folder (never call it after :meth:`publish`)."""
        self._delete_folder(state["data_prefix"])
