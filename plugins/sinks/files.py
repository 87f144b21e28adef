"""File sinks: Parquet, CSV and JSON lines, written atomically.

Ray Data writes into a staging folder beside the destination; only when the whole job has
succeeded is the staging folder moved into place, so a failed run never leaves half an output
where a finished one would be.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

from pydantic import Field

from pipeline.errors import DataError
from pipeline.interfaces import PluginParams, Sink, SinkResult


class FileSinkParams(PluginParams):
    path: str = Field(description="Output folder: a local path or any pyarrow filesystem URI.")
    mode: Literal["error", "overwrite"] = Field(
        default="error",
        description="error: refuse if the output exists; overwrite: replace it, only on success.",
    )
    min_rows_per_file: int | None = Field(
        default=None, gt=0, description="Fewer, larger files: at least this many rows each."
    )


def _filesystem(path: str):
    """(filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def _exists(fs, path: str) -> bool:
    import pyarrow.fs

    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


class _FileSink(Sink):
    writer: str = ""

    def _options(self, params: Any) -> dict[str, Any]:
        return {}

    def check(self, params: FileSinkParams) -> None:
        fs, path = _filesystem(params.path)
        if params.mode == "error" and _exists(fs, path):
            raise DataError(
                f"output already exists: {params.path}. Choose another path or set "
                "sink.params.mode=overwrite.",
                key="sink.params.path",
            )

    def write(self, dataset, params: FileSinkParams) -> SinkResult:
        fs, path = _filesystem(params.path)
        self.check(params)
        staging = f"{path.rstrip('/')}.__staging-{uuid.uuid4().hex[:8]}"
        kwargs = dict(self._options(params))
        if params.min_rows_per_file:
            kwargs["min_rows_per_file"] = params.min_rows_per_file
        try:
            getattr(dataset, self.writer)(
                staging, filesystem=fs, ray_remote_args=dict(self.io.ray_remote_args), **kwargs
            )
            if not _exists(fs, staging):  # an empty result still gets its (empty) folder
                fs.create_dir(staging)
            if _exists(fs, path):
                fs.delete_dir(path)
            fs.move(staging, path)
        finally:
            if _exists(fs, staging):
                fs.delete_dir(staging)
        return SinkResult(location=params.path)


class ParquetSink(_FileSink):
    """Write Parquet files into a folder."""

    Params = FileSinkParams
    writer = "write_parquet"


class CsvSink(_FileSink):
    """Write CSV files (with a header row) into a folder."""

    Params = FileSinkParams
    writer = "write_csv"


class JsonSink(_FileSink):
    """Write JSON lines files into a folder."""

    Params = FileSinkParams
    writer = "write_json"
