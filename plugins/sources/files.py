"""File sources: Parquet, CSV, JSON lines and plain text, from a local path or any pyarrow URI."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pipeline.errors import DataError
from pipeline.interfaces import PluginParams, Source


class FileParams(PluginParams):
    path: str | list[str] = Field(
        description="A file, a folder of files, a list of them, or any filesystem URI "
        "that pyarrow understands (s3://, gs://, hdfs://)."
    )
    columns: list[str] | None = Field(
        default=None, description="Read only these columns (all when null)."
    )


def check_paths_exist(path: str | list[str], key: str = "source.params.path") -> None:
    """Fail early, naming the path, when a local input does not exist."""
    import os

    for one in [path] if isinstance(path, str) else path:
        if "://" not in one and not os.path.exists(one):
            raise DataError(f"input path does not exist: {one}", key=key)


class _FileSource(Source):
    reader: str = ""

    def _options(self, params: FileParams) -> dict[str, Any]:
        return {}

    def read(self, params: FileParams):
        import ray.data

        check_paths_exist(params.path)
        kwargs: dict[str, Any] = dict(self._options(params))
        if self.io.num_blocks:
            kwargs["override_num_blocks"] = self.io.num_blocks
        try:
            ds = getattr(ray.data, self.reader)(params.path, **self.io.ray_remote_args, **kwargs)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise DataError(f"cannot read {params.path}: {exc}", key="source.params.path") from exc
        if params.columns:
            ds = ds.select_columns(params.columns)
        return ds


class ParquetSource(_FileSource):
    """Read Parquet files (column pruning pushed down to the reader)."""

    Params = FileParams
    reader = "read_parquet"

    def _options(self, params: FileParams) -> dict[str, Any]:
        return {"columns": params.columns} if params.columns else {}

    def read(self, params: FileParams):
        """Read with Ray Data's first Parquet reader, which streams a file in batches.

        Measured with Ray Data 2.60 on 2 CPUs (benchmarks/RESULTS.md): its default (second)
        reader lists files in a task of its own, which asks for a whole CPU and waits forever
        behind actor pools that hold the rest, and reads a 1,000,000-row file as one block
        (first block after 1.6-4.0 s, against 0.35-0.55 s, all rows after 1.0-1.2 s).
        """
        import ray.data

        context = ray.data.DataContext.get_current()
        previous = getattr(context, "use_datasource_v2", None)
        if previous is None:  # a Ray without the choice: its only reader
            return super().read(params)
        context.use_datasource_v2 = False  # the dataset keeps a copy of the context
        try:
            return super().read(params)
        finally:
            context.use_datasource_v2 = previous


class CsvSource(_FileSource):
    """Read CSV files with a header row."""

    Params = FileParams
    reader = "read_csv"


class JsonSource(_FileSource):
    """Read JSON lines files (one object per line)."""

    Params = FileParams
    reader = "read_json"

    def _options(self, params: FileParams) -> dict[str, Any]:
        return {"lines": True}


class TextParams(FileParams):
    column: str = Field(default="text", description="Name of the column holding each line.")
    drop_empty_lines: bool = Field(default=True, description="Skip blank lines.")


class TextSource(_FileSource):
    """Read text files, one row per line."""

    Params = TextParams
    reader = "read_text"

    def _options(self, params: TextParams) -> dict[str, Any]:
        return {"drop_empty_lines": params.drop_empty_lines}

    def read(self, params: TextParams):
        ds = super().read(params.model_copy(update={"columns": None}))
        if params.column != "text":
            ds = ds.rename_columns({"text": params.column})
        return ds
