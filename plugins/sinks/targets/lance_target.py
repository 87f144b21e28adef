"""A Lance dataset as a staged target: fragments per work unit, one commit at the end.

Lance's distributed-write API does the staging: :func:`lance.fragment.write_fragments` writes a
unit's data files under ``<path>/data/`` and returns their fragment metadata without touching
the dataset's manifest, so no reader (``lance.dataset``, LanceDB) sees them. The receipt keeps
each fragment's JSON; :meth:`LanceTarget.publish` commits all fragments as one ``Append`` (or
``Overwrite``) transaction, which is one new dataset version, and tags that transaction with
the run id (``bulkinfer.run_id`` in its transaction properties), so a repeated publish finds
the version it already made and commits nothing.

Staged files that no receipt names (a write task killed by a crash, or retried by Ray) are
unreferenced by every version: readers never see them, and Lance's own
``cleanup_old_versions`` reclaims them (after 7 days, or at once with ``remove_orphan_files``).

The job record and the unit markers go beside the dataset, ``<path>.__bulkinfer_staging/``
(a pyarrow filesystem: local, or the URI's, with pyarrow's own credentials).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Iterable
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.sink import JOB_KEY, StoreFolder
from plugins.sinks.targets.env import Secrets, read_env_map, s3_options
from plugins.sinks.targets.protocol import (
    UnitWriter,
    WriterTarget,
    conform,
    misfits,
    resolve_types,
    schema_from_text,
    schema_to_text,
)

#: Transaction property that names the run which made a version.
RUN_PROPERTY = "bulkinfer.run_id"
ROWS_PROPERTY = "bulkinfer.rows"
#: Transaction property that names the job (its config and input) which made a version.
JOB_PROPERTY = "bulkinfer.job"
KEY = "sink.params"
STAGING_SUFFIX = ".__bulkinfer_staging"


class VectorIndexParams(PluginParams):
    column: str = Field(description="The vector column: a fixed-size list of floats.")
    index_type: Literal["IVF_PQ", "IVF_FLAT", "IVF_SQ", "IVF_HNSW_SQ"] = Field(
        default="IVF_PQ", description="Lance index type."
    )
    metric: Literal["l2", "cosine", "dot"] = Field(default="l2", description="Distance.")
    num_partitions: int | None = Field(
        default=None, gt=0, description="IVF partitions; default about sqrt(rows), at most 256."
    )
    num_sub_vectors: int | None = Field(
        default=None,
        gt=0,
        description="IVF_PQ sub-vectors (must divide the dimension); default the largest "
        "divisor of the dimension that is at most dimension/8.",
    )
    dim: int | None = Field(
        default=None,
        gt=0,
        description="Vector length, when the plan declares the column as a list of any "
        "length: rows are stored as fixed-size lists of this length.",
    )
    name: str | None = Field(default=None, description="Index name; default <column>_idx.")


class LanceParams(PluginParams):
    path: str = Field(description="The dataset: a local folder or a URI (s3://, gs://, ...).")
    mode: Literal["error", "append", "overwrite"] = Field(
        default="error",
        description="error: refuse an existing dataset; append: add a version with this run's "
        "rows; overwrite: a version with only this run's rows (older versions stay readable).",
    )
    max_rows_per_file: int = Field(default=1024 * 1024, gt=0, description="Rows per data file.")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="Lance storage options (no credentials here)."
    )
    storage_options_env: dict[str, str] = Field(
        default_factory=dict,
        description="Storage options read from environment variables: {option: VARIABLE}.",
    )
    vector_index: VectorIndexParams | None = Field(
        default=None, description="Build (or update) an ANN index on a vector column."
    )
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="Arrow types to store columns as, {column: type}: required for a column "
        "declared null (a type only the model can tell); casts others.",
    )
    remove_orphan_files: bool = Field(
        default=False,
        description="After publishing, delete data files no version references (left by "
        "crashed writes). Only when nothing else writes to the dataset at that moment.",
    )


def _is_float_list(type_: pa.DataType) -> bool:
    return (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    ) and pa.types.is_floating(type_.value_type)


def _sub_vectors(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most ``dim / 8`` (at least 1)."""
    return max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)


class LanceUnitWriter(UnitWriter):
    """Writes one write task's rows as uncommitted fragments (runs in a Ray write task)."""

    def __init__(
        self,
        uri: str,
        schema: pa.Schema,
        mode: str,
        params: LanceParams,
        unit_id: str,
        options: Secrets,
    ) -> None:
        self.uri, self.schema, self.mode, self.params = uri, schema, mode, params
        self.unit_id, self.options = unit_id, options

    def write(self, tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
        from lance.fragment import write_fragments

        batches = (
            batch
            for table in tables
            if table.num_rows
            for batch in conform(table, self.schema).to_batches()
        )
        first = next(batches, None)
        if first is None:
            return []

        def all_batches():
            yield first
            yield from batches

        fragments = write_fragments(
            pa.RecordBatchReader.from_batches(self.schema, all_batches()),
            self.uri,
            schema=self.schema,
            mode=self.mode,
            max_rows_per_file=self.params.max_rows_per_file,
            storage_options=self.options.values(),
        )
        return [{"rows": f.physical_rows, "fragment": f.to_json()} for f in fragments]


def _storage_options(params: LanceParams) -> dict[str, str]:
    env = read_env_map(params.storage_options_env, key=f"{KEY}.storage_options_env")
    return {**params.storage_options, **env}


class LanceTarget(WriterTarget):
    """``sink=lance``: see the module docstring."""

    key = f"{KEY}.path"

    def __init__(self, params: LanceParams) -> None:
        self.params = params
        self.uri = params.path if "://" in params.path else os.path.abspath(params.path)
        self.location = params.path

    def job_store(self) -> StoreFolder:
        """``<path>.__bulkinfer_staging`` beside the dataset."""
        import pyarrow.fs

        root = self.uri.rstrip("/") + STAGING_SUFFIX
        if root.startswith("s3://"):
            fs = pyarrow.fs.S3FileSystem(**s3_options(self._options()))
            path = root.removeprefix("s3://")
        elif "://" in root:
            fs, path = pyarrow.fs.FileSystem.from_uri(root)
        else:
            fs, path = pyarrow.fs.LocalFileSystem(), root
        return StoreFolder(fs, path, self.location.rstrip("/") + STAGING_SUFFIX)

    # -- helpers --
    def _options(self) -> dict[str, str]:
        return _storage_options(self.params)

    def open(self, version: int | None = None) -> Any:
        """The dataset (its latest version unless ``version``), or None if there is none."""
        import lance

        try:
            return lance.dataset(self.uri, version=version, storage_options=self._options())
        except ValueError as exc:
            if "not found" in str(exc).lower():
                return None
            raise

    def _session(self) -> Any:
        from lance.file import LanceFileSession

        return LanceFileSession(self.uri, storage_options=self._options())

    def _stray_entries(self) -> list[str]:
        """What is at the path besides a ``data/`` folder (when it is no dataset)."""
        try:
            listed = self._session().list()
        except (OSError, ValueError):
            return []
        tops = {entry.split("/", 1)[0] for entry in listed}
        return sorted(tops - {"data"})

    def target_schema(self, schema: pa.Schema) -> pa.Schema:
        """The plan's schema as Lance stores it: a vector column becomes a fixed-size list.

        Raises :class:`DataError` for a column without a type yet (``null``, and none in
        ``column_types``), and when the vector index's column is not a list of floats, or has
        no fixed length and ``vector_index.dim`` does not give one.
        """
        schema = resolve_types(schema, self.params.column_types, "Lance")
        for field in schema:
            if pa.types.is_null(field.type):
                raise DataError(
                    f"column {field.name!r} has no type yet (declared null): a Lance dataset's "
                    "columns are fixed when it is written. Drop the column or give it a type "
                    "before the sink.",
                    key="sink",
                )
        index = self.params.vector_index
        if index is None:
            return schema
        key = f"{KEY}.vector_index"
        if index.column not in schema.names:
            raise DataError(
                f"vector index column {index.column!r} is not in the output; its columns: "
                f"{', '.join(schema.names)}",
                key=f"{key}.column",
            )
        field = schema.field(index.column)
        if not _is_float_list(field.type):
            raise DataError(
                f"vector index column {index.column!r} holds {field.type}, not a list of floats",
                key=f"{key}.column",
            )
        if pa.types.is_fixed_size_list(field.type):
            if index.dim is not None and index.dim != field.type.list_size:
                raise DataError(
                    f"column {index.column!r} holds vectors of {field.type.list_size} values, "
                    f"not {index.dim}",
                    key=f"{key}.dim",
                )
            return schema
        if index.dim is None:
            raise DataError(
                f"column {index.column!r} is declared as {field.type} (any length); an ANN "
                "index needs fixed-length vectors: set the length in vector_index.dim",
                key=f"{key}.dim",
            )
        vector = pa.list_(field.type.value_type, index.dim)
        return schema.set(schema.get_field_index(index.column), field.with_type(vector))

    # -- the steps --
    def check(self, schema: pa.Schema, resuming: bool = False) -> None:
        target = self.target_schema(schema)
        if resuming:  # the dataset may hold what the interrupted run published
            return
        ds = self.open()
        if ds is None:
            stray = self._stray_entries()
            if stray:
                raise DataError(
                    f"{self.location} exists and is not a Lance dataset (it holds "
                    f"{', '.join(stray[:5])}); choose another path",
                    key=f"{KEY}.path",
                )
            return
        if self.params.mode == "error":
            raise DataError(
                f"Lance dataset already exists: {self.location} (version {ds.version}, "
                f"{ds.count_rows()} rows). Choose another path, or set sink.params.mode="
                "append (add this run's rows) or overwrite (replace them when the job succeeds).",
                key=f"{KEY}.path",
            )
        if self.params.mode == "append":
            self._check_append(ds.schema, target)

    def _check_append(self, existing: pa.Schema, schema: pa.Schema) -> None:
        """Refuse an append whose rows the dataset (a LanceDB table too) cannot take unchanged:
        columns either side lacks, types it would change, vectors of another length."""
        missing = [n for n in existing.names if n not in schema.names]
        problems = [f"the output lacks {', '.join(missing)}"] if missing else []
        problems += misfits(schema, existing, "the dataset")
        if problems:
            raise DataError(
                f"cannot append to {self.location}: its columns differ ({'; '.join(problems)}). "
                "Set sink.params.mode=overwrite or choose another path.",
                key=f"{KEY}.mode",
            )

    def begin(self, run_id: str, schema: pa.Schema) -> dict[str, Any]:
        ds = self.open()
        target = self.target_schema(schema)
        append = ds is not None and self.params.mode == "append"
        return {
            "run_id": run_id,
            "base_version": ds.version if ds is not None else 0,
            "existed": ds is not None,
            # An append writes in the dataset's schema (its field ids); otherwise new ids.
            "schema": schema_to_text(ds.schema if append else target),
            "write_mode": "append" if append else "overwrite",
        }

    def writer(self, state: dict[str, Any], unit_id: str) -> LanceUnitWriter:
        schema = schema_from_text(state["schema"])
        options = Secrets(self._options())
        return LanceUnitWriter(self.uri, schema, state["write_mode"], self.params, unit_id, options)

    def published_version(self, ds: Any, state: dict[str, Any]) -> int | None:
        """The version this run's commit made, if it made one since the job began."""
        for version in range(ds.version, state["base_version"], -1):
            try:
                transaction = ds.read_transaction(version)
            except (OSError, ValueError):  # cleaned up, or never written
                continue
            props = (transaction.transaction_properties or {}) if transaction else {}
            if props.get(RUN_PROPERTY) == state["run_id"]:
                return version
        return None

    def last_job(self) -> dict[str, str] | None:
        ds = self.open()
        if ds is None:
            return None
        try:
            transaction = ds.read_transaction(ds.version)
        except (OSError, ValueError):  # cleaned up
            return None
        props = (transaction.transaction_properties or {}) if transaction else {}
        if JOB_PROPERTY not in props:
            return None
        return {
            "job": props[JOB_PROPERTY],
            "run_id": props.get(RUN_PROPERTY, ""),
            "at": f"version {ds.version}",
        }

    def publish(self, state: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, Any]:
        from lance import LanceDataset, LanceOperation
        from lance.dataset import Transaction
        from lance.fragment import FragmentMetadata

        rows = sum(r["rows"] for r in receipts)
        ds = self.open()
        done = self.published_version(ds, state) if ds is not None else None
        if done is not None:
            return {"rows": rows, "already": True, "version": done, **self._after_publish()}
        if ds is not None and not state["existed"] and self.params.mode == "error":
            raise DataError(
                f"a Lance dataset appeared at {self.location} while the job ran; the finished "
                "work is kept: move that dataset away and rerun with run.resume=true",
                key=f"{KEY}.path",
            )
        fragments = [
            FragmentMetadata.from_json(json.dumps(part["fragment"]))
            for r in receipts
            for part in r["parts"]
        ]
        if ds is not None and state["write_mode"] == "append":
            if not fragments:
                return {"rows": 0, "already": False, "version": ds.version}
            operation = LanceOperation.Append(fragments)
        else:
            operation = LanceOperation.Overwrite(schema_from_text(state["schema"]), fragments)
        properties = {RUN_PROPERTY: state["run_id"], ROWS_PROPERTY: str(rows)}
        if state.get(JOB_KEY):
            properties[JOB_PROPERTY] = state[JOB_KEY]
        committed = LanceDataset.commit(
            self.uri,
            Transaction(
                read_version=ds.version if ds is not None else 0,
                operation=operation,
                transaction_properties=properties,
            ),
            storage_options=self._options(),
        )
        return {
            "rows": rows,
            "already": False,
            "version": committed.version,
            **self._after_publish(),
        }

    def _after_publish(self) -> dict[str, Any]:
        """The index and the orphan clean-up, each safe to repeat.

        The rows are published by then, so an index that fails to build does not fail the job:
        the outcome says ``{"index_error": message}`` (the next publish of the job retries).
        """
        outcome: dict[str, Any] = {}
        if self.params.vector_index is not None:
            try:
                outcome["index"] = self.ensure_index()
            except (OSError, ValueError, RuntimeError) as exc:
                outcome["index_error"] = str(exc).splitlines()[0]
        if self.params.remove_orphan_files:
            self.open().cleanup_old_versions(
                older_than=_dt.timedelta(days=365 * 100),  # keeps every version
                delete_unverified=True,
                error_if_tagged_old_versions=False,
            )
        return outcome

    def ensure_index(self) -> str | None:
        """Build the vector index, or fold the rows it lacks into it (a new version either way).

        Returns the index's name (None when there are no rows to train it on yet).
        """
        index = self.params.vector_index
        assert index is not None
        ds = self.open()
        name = index.name or f"{index.column}_idx"
        if name in {i.name for i in ds.describe_indices()}:
            if ds.index_statistics(name).get("num_unindexed_rows"):
                ds.optimize.optimize_indices(index_names=[name])
            return name
        rows = ds.count_rows()
        if rows == 0:
            return None  # nothing to train on; the next run that adds rows builds it
        dim = ds.schema.field(index.column).type.list_size
        kwargs: dict[str, Any] = {
            "num_partitions": index.num_partitions or max(1, min(256, round(math.sqrt(rows)))),
        }
        if index.index_type == "IVF_PQ":
            kwargs["num_sub_vectors"] = index.num_sub_vectors or _sub_vectors(dim)
        ds.create_index(
            index.column,
            index_type=index.index_type,
            name=name,
            metric=index.metric,
            replace=True,
            **kwargs,
        )
        return name

    def discard(
        self, state: dict[str, Any], unit_ids: list[str], receipts: list[dict[str, Any]]
    ) -> None:
        """Delete the data files the receipts of ``unit_ids`` name (never referenced yet).

        Files of a unit killed before it had a receipt are not known here; they stay
        unreferenced (see the module docstring).
        """
        session = self._session()
        for r in receipts:
            if r["unit"] not in unit_ids:
                continue
            for part in r["parts"]:
                for data_file in part["fragment"]["files"]:
                    path = f"data/{data_file['path']}"
                    if session.contains(path):
                        session.delete_file(path)

    def abandon(self, state: dict[str, Any]) -> None:
        """When the dataset never came to be, remove the folder of staged files entirely."""
        if self.open() is None and not state["existed"] and not self._stray_entries():
            session = self._session()
            for path in session.list("data"):
                session.delete_file(path)
            if "://" not in self.uri:  # a local folder: leave no empty folders either
                for folder in (os.path.join(self.uri, "data"), self.uri):
                    if os.path.isdir(folder) and not os.listdir(folder):
                        os.rmdir(folder)
