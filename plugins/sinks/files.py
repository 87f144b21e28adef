"""File sinks: Parquet, CSV and JSON lines, written atomically.

These sinks declare their destination (:meth:`output`) and write one folder of files at a
time (:meth:`write_files`, which reports the rows of every file it wrote); the runner stages the
output beside the destination, commits it work unit by work unit, and moves it into place with a
``_SUCCESS`` manifest only when the whole job has succeeded, so a failed run never leaves half an
output where a finished one would be. What a format cannot hold (a vector in a CSV field) is
refused before any model loads (:meth:`check_schema`).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

from pydantic import Field

from pipeline.contract.plugin import PluginParams
from pipeline.contract.sink import BlockWriter, FileOutput, FileSink


class FileSinkParams(PluginParams):
    path: str = Field(description="Output folder: a local path or any pyarrow filesystem URI.")
    mode: Literal["error", "overwrite", "append"] = Field(
        default="error",
        description="error: refuse if the output exists; overwrite: replace it, only on success; "
        "append: add this run's files (and manifest totals) to a finished output.",
    )
    columns: list[str] | None = Field(
        default=None,
        description="Write only these columns, in this order (all when null).",
    )
    min_rows_per_file: int | None = Field(
        default=None, gt=0, description="Fewer, larger files: at least this many rows each."
    )


class CsvSinkParams(FileSinkParams):
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")


def _filesystem(path: str):
    """(filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


class _FileSink(FileSink):
    """Base of the file sinks: a staged folder of files from one of :mod:`.datasinks`."""

    def _datasink(self, folder: str, fs: Any, params: FileSinkParams) -> Any:
        raise NotImplementedError

    def _refusal(self) -> Any:
        """A function type -> reason this format cannot hold it, or None."""
        return None

    def check_schema(self, params: FileSinkParams, schema: Any) -> None:
        from plugins.batches import require_fields
        from plugins.sinks.capabilities import refuse

        if params.columns:
            require_fields(schema, params.columns, "sink.params.columns")
            import pyarrow as pa

            schema = pa.schema([schema.field(c) for c in params.columns])
        if self._refusal() is not None:
            refuse(schema, self.name, self._refusal())

    def output(self, params: FileSinkParams) -> FileOutput:
        fs, path = _filesystem(params.path)
        return FileOutput(filesystem=fs, path=path, location=params.path, mode=params.mode)

    def write_files(self, dataset: Any, folder: str, params: FileSinkParams) -> dict[str, int]:
        fs, _ = _filesystem(params.path)
        if params.columns:
            dataset = dataset.select_columns(params.columns)
        sink = self._datasink(folder, fs, params)
        dataset.write_datasink(sink, ray_remote_args=dict(self.io.ray_remote_args))
        return dict(sink.counts)

    def writer(self, folder: str, params: FileSinkParams, part: str) -> FileWriter:
        fs, _ = _filesystem(params.path)
        return FileWriter(self._datasink(folder, fs, params), part, params.columns)

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("Sink").lower()


class ParquetSink(_FileSink):
    """Write Parquet files into a folder (every Arrow type)."""

    Params = FileSinkParams

    def _datasink(self, folder: str, fs: Any, params: FileSinkParams) -> Any:
        from plugins.sinks.datasinks import ParquetFiles

        return ParquetFiles(folder, fs, min_rows_per_file=params.min_rows_per_file)


class CsvSink(_FileSink):
    """Write CSV files (a header row, RFC 4180 quoting) into a folder; scalar columns only."""

    Params = CsvSinkParams

    def _refusal(self) -> Any:
        from plugins.sinks.capabilities import csv_refusal

        return csv_refusal

    def _datasink(self, folder: str, fs: Any, params: CsvSinkParams) -> Any:
        from plugins.sinks.datasinks import CsvFiles

        return CsvFiles(
            folder, fs, min_rows_per_file=params.min_rows_per_file, delimiter=params.delimiter
        )


class JsonSink(_FileSink):
    """Write JSON lines files into a folder (no bytes, decimals or durations)."""

    Params = FileSinkParams

    def _refusal(self) -> Any:
        from plugins.sinks.capabilities import json_refusal

        return json_refusal

    def _datasink(self, folder: str, fs: Any, params: FileSinkParams) -> Any:
        from plugins.sinks.datasinks import JsonLinesFiles

        return JsonLinesFiles(folder, fs, min_rows_per_file=params.min_rows_per_file)


class FileWriter(BlockWriter):
    """Each write task's file (``<part>-<random>.<extension>``) through the sink's datasink."""

    def __init__(self, datasink: Any, part: str, columns: list[str] | None) -> None:
        self.datasink, self.part, self.columns = datasink, part, columns
        self.min_rows_per_write = datasink.min_rows_per_file

    def write(self, tables: Any) -> list[dict[str, Any]]:
        self.datasink.filesystem.create_dir(self.datasink.folder, recursive=True)
        if self.columns:
            tables = (t.select(self.columns) for t in tables)
        files = self.datasink.write_tables(tables, f"{self.part}-{uuid.uuid4().hex[:12]}")
        return [{"name": name, "rows": rows} for name, rows in files]
