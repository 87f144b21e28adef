"""File sinks: Parquet, CSV and JSON lines, written atomically.

These sinks declare their destination (:meth:`file_output`) and write one folder of files at a
time (:meth:`write_files`); the runner stages the output beside the destination, commits it
work unit by work unit, and moves it into place with a ``_SUCCESS`` manifest only when the whole
job has succeeded, so a failed run never leaves half an output where a finished one would be.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Literal

from pydantic import Field

from pipeline.errors import DataError
from pipeline.interfaces import FileOutput, PluginParams, Sink, SinkResult


class FileSinkParams(PluginParams):
    path: str = Field(description="Output folder: a local path or any pyarrow filesystem URI.")
    mode: Literal["error", "overwrite", "append"] = Field(
        default="error",
        description="error: refuse if the output exists; overwrite: replace it, only on success; "
        "append: add this run's files (and manifest totals) to a finished output.",
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

    def file_output(self, params: FileSinkParams) -> FileOutput:
        fs, path = _filesystem(params.path)
        return FileOutput(filesystem=fs, path=path, location=params.path, mode=params.mode)

    def write_files(self, dataset, folder: str, params: FileSinkParams) -> None:
        fs, _ = _filesystem(params.path)
        kwargs = dict(self._options(params))
        if params.min_rows_per_file:
            kwargs["min_rows_per_file"] = params.min_rows_per_file
        getattr(dataset, self.writer)(
            folder, filesystem=fs, ray_remote_args=dict(self.io.ray_remote_args), **kwargs
        )

    def count_rows(self, path: str, params: FileSinkParams) -> int:
        fs, _ = _filesystem(params.path)
        with fs.open_input_stream(path) as stream:
            return self._count(stream)

    def _count(self, stream) -> int:
        raise NotImplementedError

    def write(self, dataset, params: FileSinkParams) -> SinkResult:
        """Write in one piece without the runner (staging folder, moved into place at the end)."""
        fs, path = _filesystem(params.path)
        self.check(params)
        staging = f"{path.rstrip('/')}.__staging-{uuid.uuid4().hex[:8]}"
        try:
            self.write_files(dataset, staging, params)
            if not _exists(fs, staging):  # an empty result still gets its (empty) folder
                fs.create_dir(staging)
            if _exists(fs, path):
                fs.delete_dir(path)
            fs.move(staging, path)
        finally:
            if _exists(fs, staging):
                fs.delete_dir(staging)
        return SinkResult(location=params.path)


def _count_lines(stream) -> int:
    lines, last = 0, b"\n"
    while chunk := stream.read(1 << 20):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    return lines + (last != b"\n")


class ParquetSink(_FileSink):
    """Write Parquet files into a folder."""

    Params = FileSinkParams

    def write_files(self, dataset, folder: str, params: FileSinkParams) -> None:
        from plugins.sinks.parquet_files import ParquetFiles

        fs, _ = _filesystem(params.path)
        sink = ParquetFiles(folder, fs, min_rows_per_file=params.min_rows_per_file)
        dataset.write_datasink(sink, ray_remote_args=dict(self.io.ray_remote_args))

    def count_rows(self, path: str, params: FileSinkParams) -> int:
        import pyarrow.parquet as pq

        fs, _ = _filesystem(params.path)
        with fs.open_input_file(path) as f:  # random access: only the footer is read
            return pq.ParquetFile(f).metadata.num_rows


class CsvSink(_FileSink):
    """Write CSV files (with a header row) into a folder."""

    Params = FileSinkParams
    writer = "write_csv"

    def _count(self, stream) -> int:
        import pyarrow.csv

        return sum(batch.num_rows for batch in pyarrow.csv.open_csv(stream))


class JsonSink(_FileSink):
    """Write JSON lines files into a folder."""

    Params = FileSinkParams
    writer = "write_json"

    def _count(self, stream) -> int:
        return _count_lines(stream)  # JSON lines: one row per line
