"""File sources: Parquet, CSV, JSON lines and plain text, from a local path or any pyarrow URI.

The input files are listed once, sorted, and grouped into work units of about ``run.unit_bytes``
(a file is never split), so a resumed job reads only the files of its unfinished units.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import Field

from pipeline.errors import DataError
from pipeline.interfaces import PluginParams, Source, WorkUnit


class FileParams(PluginParams):
    path: str | list[str] = Field(
        description="A file, a folder of files, a list of them, or any filesystem URI "
        "that pyarrow understands (s3://, gs://, hdfs://)."
    )
    columns: list[str] | None = Field(
        default=None, description="Read only these columns (all when null)."
    )


def _paths(path: str | list[str]) -> list[str]:
    return [path] if isinstance(path, str) else list(path)


def check_paths_exist(path: str | list[str], key: str = "source.params.path") -> None:
    """Fail early, naming the path, when a local input does not exist."""
    import os

    for one in _paths(path):
        if "://" not in one and not os.path.exists(one):
            raise DataError(f"input path does not exist: {one}", key=key)


def _hidden(relative: str) -> bool:
    """Ray Data skips files and folders whose name starts with '.' or '_' (``_SUCCESS``...)."""
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def list_files(path: str | list[str], extensions: list[str] | None) -> list[tuple[str, int]]:
    """(path or URI, size) of every input file, sorted, as Ray Data would read them."""
    import pyarrow.fs

    found: list[tuple[str, int]] = []
    for one in _paths(path):
        if "://" in one:
            fs, root = pyarrow.fs.FileSystem.from_uri(one)
            prefix = one.split("://", 1)[0] + "://"
        else:
            import os

            fs, root, prefix = pyarrow.fs.LocalFileSystem(), os.path.abspath(one), ""
        info = fs.get_file_info(root)
        if info.type == pyarrow.fs.FileType.File:
            found.append((prefix + info.path, info.size))
            continue
        selector = pyarrow.fs.FileSelector(root, recursive=True)
        for entry in fs.get_file_info(selector):
            relative = entry.path[len(root) :].lstrip("/")
            if entry.type != pyarrow.fs.FileType.File or _hidden(relative):
                continue
            name = entry.path.lower()
            if extensions and not any(name.endswith("." + e.lower()) for e in extensions):
                continue
            found.append((prefix + entry.path, entry.size))
    return sorted(set(found))


def group_files(files: list[tuple[str, int]], unit_bytes: int | None) -> list[WorkUnit]:
    """Consecutive files in units of about ``unit_bytes`` (at least one file each)."""
    units: list[list[tuple[str, int]]] = []
    size = 0
    for file in files:
        if not units or (unit_bytes is not None and size >= unit_bytes):
            units.append([])
            size = 0
        units[-1].append(file)
        size += file[1]
    return [WorkUnit(id=f"{i:05d}", spec={"files": group}) for i, group in enumerate(units)]


class _FileSource(Source):
    reader: str = ""

    def _options(self, params: FileParams) -> dict[str, Any]:
        return {}

    def _extensions(self) -> list[str] | None:
        """The reader's default file extensions (what it reads from a folder)."""
        import ray.data

        parameter = inspect.signature(getattr(ray.data, self.reader)).parameters.get(
            "file_extensions"
        )
        return parameter.default if parameter is not None else None

    def _read(self, paths: str | list[str], params: FileParams, **extra: Any):
        import ray.data

        kwargs: dict[str, Any] = {**self._options(params), **extra}
        if self.io.num_blocks:
            # No more read tasks than files: Ray only slices a file's output into more blocks,
            # and a read sliced that way does not fuse with the stage after it.
            files = len(paths) if isinstance(paths, list) else self.io.num_blocks
            kwargs["override_num_blocks"] = max(1, min(self.io.num_blocks, files))
        try:
            ds = getattr(ray.data, self.reader)(paths, **self.io.ray_remote_args, **kwargs)
        except (FileNotFoundError, OSError, ValueError) as exc:
            where = self._find_unreadable(params) or params.path
            raise DataError(f"cannot read {where}: {exc}", key="source.params.path") from None
        if params.columns:
            ds = ds.select_columns(params.columns)
        return ds

    def read(self, params: FileParams):
        check_paths_exist(params.path)
        return self._read(params.path, params)

    def units(self, params: FileParams) -> list[WorkUnit]:
        check_paths_exist(params.path)
        return group_files(list_files(params.path, self._extensions()), self.io.unit_bytes)

    def read_unit(self, params: FileParams, unit: WorkUnit):
        if unit.spec is None:
            return self.read(params)
        return self._read([f for f, _ in unit.spec["files"]], params, file_extensions=None)

    def explain_read_error(self, params: FileParams, unit: WorkUnit) -> DataError | None:
        files = None if unit.spec is None else [f for f, _ in unit.spec["files"]]
        found = self._find_unreadable(params, files)
        if found is None:
            return None
        return DataError(f"cannot read input file {found}", key="source.params.path")

    def _find_unreadable(self, params: FileParams, files: list[str] | None = None) -> str | None:
        """``file: error`` for the first input file that does not parse, else None."""
        import pyarrow.fs

        if files is None:
            try:
                files = [f for f, _ in list_files(params.path, self._extensions())]
            except OSError:
                return None
        for file in files:
            if "://" in file:
                fs, path = pyarrow.fs.FileSystem.from_uri(file)
            else:
                fs, path = pyarrow.fs.LocalFileSystem(), file
            try:
                with fs.open_input_file(path) as f:
                    self._parse(f, params)
            except Exception as exc:  # any parse error: this is the file at fault
                return f"{file} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        return None

    def _parse(self, f, params: FileParams) -> None:
        """Read a whole file with pyarrow, raising if it is not valid input for this source."""
        f.read().decode("utf-8")


class ParquetSource(_FileSource):
    """Read Parquet files (column pruning pushed down to the reader)."""

    Params = FileParams
    reader = "read_parquet"

    def _options(self, params: FileParams) -> dict[str, Any]:
        return {"columns": params.columns} if params.columns else {}

    def _read(self, paths: str | list[str], params: FileParams, **extra: Any):
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
            return super()._read(paths, params, **extra)
        context.use_datasource_v2 = False  # the dataset keeps a copy of the context
        try:
            return super()._read(paths, params, **extra)
        finally:
            context.use_datasource_v2 = previous

    def _parse(self, f, params: FileParams) -> None:
        import pyarrow.parquet as pq

        for _ in pq.ParquetFile(f).iter_batches():
            pass


class CsvSource(_FileSource):
    """Read CSV files with a header row."""

    Params = FileParams
    reader = "read_csv"

    def _parse(self, f, params: FileParams) -> None:
        import pyarrow.csv

        for _ in pyarrow.csv.open_csv(f):
            pass


class JsonSource(_FileSource):
    """Read JSON lines files (one object per line)."""

    Params = FileParams
    reader = "read_json"

    def _options(self, params: FileParams) -> dict[str, Any]:
        return {"lines": True}

    def _parse(self, f, params: FileParams) -> None:
        import json

        for number, line in enumerate(f.read().decode("utf-8").splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"line {number}: {exc}") from None


class TextParams(FileParams):
    column: str = Field(default="text", description="Name of the column holding each line.")
    drop_empty_lines: bool = Field(default=True, description="Skip blank lines.")


class TextSource(_FileSource):
    """Read text files, one row per line."""

    Params = TextParams
    reader = "read_text"

    def _options(self, params: TextParams) -> dict[str, Any]:
        return {"drop_empty_lines": params.drop_empty_lines}

    def _read(self, paths, params: TextParams, **extra: Any):
        ds = super()._read(paths, params.model_copy(update={"columns": None}), **extra)
        if params.column != "text":
            ds = ds.rename_columns({"text": params.column})
        return ds
