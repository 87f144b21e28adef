"""File sources: Parquet and plain text here; CSV and JSON lines in their own modules.

The input files are listed once, sorted, and grouped into work units of about ``run.unit_bytes`` (a
file is never split), so a resumed job reads only the files of its unfinished units. Every source
reports its Arrow schema on the driver (:meth:`~pipeline.contract.source.Source.schema`) and then
reads every file with exactly those types, so a value keeps its type from the first file to the
last. An input that cannot be reached (no route, no credentials, no bucket) is one
:class:`~pipeline.contract.errors.DataError` naming ``source.params.path``, the URI and the cause,
within :data:`REMOTE_TIMEOUT_S` seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import Field

from pipeline.contract.errors import DataError, EmptyInputError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.reach import reach
from pipeline.contract.source import WHOLE_SOURCE, Preview, Source, WorkUnit

KEY = "source.params.path"
#: Longest wait for a remote filesystem to answer a listing or a metadata read.
REMOTE_TIMEOUT_S = 30.0
#: Bytes of the first input file that schema inference reads (CSV, JSON lines).
SAMPLE_BYTES = 1 << 20
#: At most this many Parquet footers are read to find out, before the job, that there are no rows.
EMPTY_CHECK_FILES = 64

T = TypeVar("T")


def empty_input(path: Any, why: str = "") -> EmptyInputError:
    return EmptyInputError.for_source(path, why, key=KEY)


class FileParams(PluginParams):
    path: str | list[str] = Field(
        description="A file, a folder of files, a list of them, or any filesystem URI "
        "that pyarrow understands (s3://, gs://, hdfs://)."
    )
    columns: list[str] | None = Field(
        default=None, description="Read only these columns (all when null)."
    )


class TypedFileParams(FileParams):
    schema_: dict[str, str] | None = Field(
        default=None,
        alias="schema",
        description="Column -> Arrow type name (e.g. {id: string, score: float64, "
        "created_at: 'timestamp[us, tz=UTC]'}): read these columns with these types instead "
        "of inferring them. The other columns are inferred.",
    )

    def declared(self, key: str = "source.params.schema") -> Any:
        """The declared columns as a ``pyarrow.Schema`` (empty when none)."""
        from pipeline.contract.schema import parse_schema

        return parse_schema(self.schema_ or {}, key)


def _paths(path: str | list[str]) -> list[str]:
    return [path] if isinstance(path, str) else list(path)


def is_uri(path: str) -> bool:
    return "://" in path


def remote(call: Callable[[], T], uri: str, key: str = KEY) -> T:
    """``call()``, which reaches ``uri``; its failure, or no answer within
    :data:`REMOTE_TIMEOUT_S`, becomes one DataError naming ``key``, the URI and the cause."""
    if not is_uri(uri):
        return call()
    return reach(call, key=key, location=uri, verb="read", timeout_s=REMOTE_TIMEOUT_S)


def check_paths_exist(path: str | list[str], key: str = KEY) -> None:
    """Fail early, naming the path, when a local input does not exist."""
    for one in _paths(path):
        if not is_uri(one) and not os.path.exists(one):
            raise DataError(f"input path does not exist: {one}", key=key)


def filesystem(path: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    import pyarrow.fs

    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def _hidden(relative: str) -> bool:
    """Ray Data skips files and folders whose name starts with '.' or '_' (``_SUCCESS``...)."""
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _list_one(one: str, extensions: list[str] | None) -> list[tuple[str, int]]:
    import pyarrow.fs

    fs, root = filesystem(one)
    prefix = one.split("://", 1)[0] + "://" if is_uri(one) else ""
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataError(f"input path does not exist: {one}", key=KEY)
    if info.type == pyarrow.fs.FileType.File:
        return [(prefix + info.path, info.size)]
    found = []
    for entry in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        relative = entry.path[len(root) :].lstrip("/")
        if entry.type != pyarrow.fs.FileType.File or _hidden(relative):
            continue
        name = entry.path.lower()
        if extensions and not any(name.endswith("." + e.lower()) for e in extensions):
            continue
        found.append((prefix + entry.path, entry.size))
    return found


def list_files(path: str | list[str], extensions: list[str] | None) -> list[tuple[str, int]]:
    """(path or URI, size) of every input file, sorted, as Ray Data would read them."""
    check_paths_exist(path)
    found: list[tuple[str, int]] = []
    for one in _paths(path):
        found += remote(lambda one=one: _list_one(one, extensions), one)
    return sorted(set(found))


def open_input(file: str):
    """A random-access pyarrow file for a path or URI."""
    fs, path = filesystem(file)
    return fs.open_input_file(path)


#: File name endings of compressed text files: pyarrow decompresses them as it reads
#: (``open_input_stream(compression="detect")``: gzip, bz2, brotli, zstd, lz4).
COMPRESSED = (".gz", ".bz2", ".br", ".zst", ".lz4")


def is_compressed(file: str) -> bool:
    return file.lower().endswith(COMPRESSED)


def open_stream(file: str):
    """A pyarrow input stream over a path or URI, decompressed where its name ends in one of
    :data:`COMPRESSED`."""
    fs, path = filesystem(file)
    return fs.open_input_stream(path, compression="detect")


def read_text(file: str, limit: int | None = None) -> bytes:
    """A text file's bytes (the first ``limit`` of them; None: all), decompressed (see
    :func:`open_stream`). A compressed file that does not decompress (truncated, or not in
    the format its name says) raises a DataError naming it."""
    try:
        with open_stream(file) as f:
            return f.read(limit)
    except OSError as exc:
        if not is_compressed(file):
            raise
        raise unreadable(file, exc) from None


def read_head(file: str, limit: int = SAMPLE_BYTES) -> bytes:
    """The first ``limit`` bytes of a file's text (all of it if shorter), decompressed (see
    :func:`read_text`)."""
    return remote(lambda: read_text(file, limit), file)


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


def select(schema: Any, columns: list[str] | None, key: str = "source.params.columns") -> Any:
    """``schema`` narrowed to ``columns`` (in that order); a missing column is an error."""
    if not columns:
        return schema
    from plugins.batches import require_fields

    require_fields(schema, columns, key)
    import pyarrow as pa

    return pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)


#: Lines of a text file per table its read yields.
LINES_PER_TABLE = 65536


class FileSource(Source):
    """Base of the file sources: listing, work units, schema on the driver, read errors.

    A subclass sets ``reader`` (the ``ray.data`` read function, for its default extensions) and
    implements :meth:`file_schema` (the types it reads, from the first file) and
    :meth:`read_files` (the Ray read with exactly those types); :meth:`check_file` parses one
    whole file the same way, to name the file at fault when a read fails.
    """

    #: The ``ray.data`` read function the source uses.
    reader: str = ""
    #: Its default ``file_extensions`` (Ray Data 2.60), without importing Ray at plan time.
    file_extensions: tuple[str, ...] | None = None

    def extensions(self) -> list[str] | None:
        """What the source reads from a folder: Ray Data's default file extensions for its
        reader (``tests/test_io.py`` holds them against Ray's); None: every file."""
        return list(self.file_extensions) if self.file_extensions is not None else None

    def files(self, params: FileParams) -> list[tuple[str, int]]:
        """The input files and their sizes, listed once per source instance."""
        cached = getattr(self, "_files", None)
        if cached is not None and cached[0] == params.model_dump_json():
            return cached[1]
        files = list_files(params.path, self.extensions())
        if not files:
            raise empty_input(params.path, "no input files")
        self._files = (params.model_dump_json(), files)
        return files

    def schema(self, params: FileParams) -> Any:
        files = self.files(params)
        return self.file_schema(params, files)

    def file_schema(self, params: FileParams, files: list[tuple[str, int]]) -> Any:
        raise NotImplementedError

    def read_files(self, params: FileParams, files: list[str]):
        raise NotImplementedError

    def read_file(self, params: FileParams, file: str) -> Iterator[Any]:
        """One file's rows as Arrow tables with exactly the types of :meth:`schema`, in file
        order, without Ray."""
        raise NotImplementedError

    def read_unit(self, params: FileParams, unit: WorkUnit) -> Iterator[Any]:
        """The unit's files, in order, each read by :meth:`read_file`; a file that does not
        parse is a DataError naming it."""
        for file, _ in self.unit_files(params, unit):
            try:
                yield from self.read_file(params, file)
            except DataError:
                raise
            except Exception as exc:  # any parse error: this is the file at fault
                raise unreadable(file, exc) from None

    def check_file(self, params: FileParams, f: Any) -> None:
        """Parse a whole open file as the read does, raising if it is not valid input."""
        f.read().decode("utf-8")

    def read_options(self, files: list[str]) -> dict[str, Any]:
        """Ray read arguments every file source passes: the planner's CPU share and blocks."""
        kwargs: dict[str, Any] = dict(self.io.ray_remote_args)
        if self.io.num_blocks:
            # No more read tasks than files: Ray only slices a file's output into more blocks,
            # and a read sliced that way does not fuse with the stage after it.
            kwargs["override_num_blocks"] = max(1, min(self.io.num_blocks, len(files)))
        return kwargs

    def units(self, params: FileParams) -> list[WorkUnit]:
        return group_files(self.files(params), self.io.unit_bytes)

    def head(self, params: FileParams, file: str, size: int, schema: Any) -> tuple[Any, int]:
        """The whole rows in the first :data:`SAMPLE_BYTES` of ``file`` (``size`` bytes) as a
        table with the columns and types of ``schema``, and the bytes they came from."""
        raise NotImplementedError

    def preview(self, params: FileParams, limit: int) -> Preview:
        """The first rows of the first file; the row count is exact when that file is the whole
        input and fits the sample, else estimated from the sample's bytes per row."""
        files = self.files(params)
        schema = self.schema(params)
        file, size = next(((f, n) for f, n in files if n), files[0])
        table, used = self.head(params, file, size, schema)
        total_bytes = sum(n for _, n in files)
        if used >= total_bytes:
            return Preview(table.slice(0, limit), table.num_rows, "exact: the whole input read")
        total = round(total_bytes * table.num_rows / used) if used and table.num_rows else None
        how = (
            f"estimated: {_mib(total_bytes)} in {len(files)} file(s) at the bytes per row of "
            f"the first {table.num_rows:,} rows"
        )
        return Preview(table.slice(0, limit), total, how)

    def read(self, params: FileParams, unit: WorkUnit = WHOLE_SOURCE):
        return self.read_files(params, [f for f, _ in self.unit_files(params, unit)])

    def unit_files(self, params: FileParams, unit: WorkUnit) -> list[tuple[str, int]]:
        """(path, bytes) of the unit's files: every listed file for the whole source."""
        return self.files(params) if unit.spec is None else unit.spec["files"]

    def explain_read_error(self, params: FileParams, unit: WorkUnit) -> DataError | None:
        files = None if unit.spec is None else [f for f, _ in unit.spec["files"]]
        if files is None:
            try:
                files = [f for f, _ in list_files(params.path, self.extensions())]
            except DataError as exc:
                return exc
        for file in files:
            try:
                with open_stream(file) if is_compressed(file) else open_input(file) as f:
                    self.check_file(params, f)
            except DataError as exc:
                return DataError(f"cannot read input file {file}: {exc.message}", key=KEY)
            except Exception as exc:  # any parse error: this is the file at fault
                return unreadable(file, exc)
        return None


def unreadable(file: str, exc: Exception) -> DataError:
    """The DataError naming ``source.params.path``, the file and the parser's cause (300 chars)."""
    cause = " ".join(str(exc).split())[:300]
    return DataError(f"cannot read input file {file} ({type(exc).__name__}: {cause})", key=KEY)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def whole_lines(data: bytes, limit: int = SAMPLE_BYTES) -> bytes:
    """``data``, a file's head as :func:`read_head` read it (up to ``limit`` bytes), cut after
    its last whole line unless the file ended within it."""
    return data if len(data) < limit else data[: data.rfind(b"\n") + 1]


class ParquetParams(TypedFileParams):
    pass


def parquet_file(f: Any, path: str) -> Any:
    """``pyarrow.parquet.ParquetFile`` over the open file ``f`` (read from ``path``).

    Raises:
        DataError: naming ``source.params.path`` and the file, when it is not Parquet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise unreadable(path, exc) from None


class ParquetSource(FileSource):
    """Read Parquet files (column pruning pushed down to the reader; types as stored)."""

    Params = ParquetParams
    reader = "read_parquet"
    file_extensions = ("parquet",)

    def file_schema(self, params: ParquetParams, files: list[tuple[str, int]]) -> Any:
        """The columns as every file is read: the first file's, each type widened where a
        later file holds a wider one (:func:`unify_footers`; up to :data:`EMPTY_CHECK_FILES`
        files, whose footers also tell whether there are rows), declared types over them."""
        checked = files if len(files) <= EMPTY_CHECK_FILES else files[:1]
        footers = [self._footer(f) for f, _ in checked]
        stored = unify_footers([(f, s) for f, _, s in footers], params)
        first = footers[0][2]
        differ = any(not s.equals(first) for _, _, s in footers) or not stored.equals(first)
        self._read_schema = (params.model_dump_json(), stored, differ)
        if len(files) <= EMPTY_CHECK_FILES and not any(rows for _, rows, _ in footers):
            raise empty_input(params.path, "its Parquet files hold no rows")
        return select(_declared_over(stored, params), params.columns)

    @staticmethod
    def _footer(file: str) -> tuple[str, int, Any]:
        """(file, rows, Arrow schema) from a Parquet file's footer (one read)."""

        def read() -> tuple[str, int, Any]:
            with open_input(file) as f:
                parquet = parquet_file(f, file)
                return file, parquet.metadata.num_rows, parquet.schema_arrow

        return remote(read, file)

    def _unified(self, params: ParquetParams) -> Any | None:
        """The schema every file is read with when the files' footers differ (None: they
        agree, and each is read as stored), found once per source instance."""
        cached = getattr(self, "_read_schema", None)
        if cached is None or cached[0] != params.model_dump_json():
            self.schema(params)
            cached = self._read_schema
        return cached[1] if cached[2] else None

    def preview(self, params: ParquetParams, limit: int) -> Preview:
        """The first ``limit`` rows; the row count from every file's footer (exact)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files(params)
        schema = self.schema(params)
        batches, rows = [], 0
        for file, _ in files:
            with open_input(file) as f:
                for batch in pq.ParquetFile(f).iter_batches(limit, columns=params.columns):
                    batches.append(_with_columns(pa.Table.from_batches([batch]), schema))
                    rows += batch.num_rows
                    if rows >= limit:
                        break
            if rows >= limit:
                break
        table = pa.concat_tables([t.cast(schema) for t in batches]) if batches else None
        table = table.slice(0, limit) if table is not None else schema.empty_table()
        total = sum(self._rows(f) for f, _ in files)
        return Preview(table, total, f"exact: the footers of {len(files)} Parquet file(s)")

    def read_file(self, params: ParquetParams, file: str) -> Iterator[Any]:
        """The file's row groups in batches, pruned to ``columns``, cast to the job's types; a
        column of the job's schema that this file lacks is all nulls in its rows (the planner
        unified the files' footers: :func:`unify_footers`)."""
        import pyarrow as pa

        schema = self.schema(params)
        with open_input(file) as f:
            reader = parquet_file(f, file)
            present = set(reader.schema_arrow.names)
            wanted = [n for n in schema.names if n in present]
            for batch in reader.iter_batches(columns=wanted):
                table = pa.Table.from_batches([batch])
                table = pa.table(
                    {
                        field.name: table.column(field.name)
                        if field.name in present
                        else pa.nulls(table.num_rows, field.type)
                        for field in schema
                    }
                )
                yield table if table.schema.equals(schema) else table.cast(schema)

    def count_rows(self, params: ParquetParams, unit: WorkUnit) -> int | None:
        """The rows in the unit's files' footers; None past :data:`EMPTY_CHECK_FILES` files
        (a footer read each: a request each on object storage)."""
        files = self.unit_files(params, unit)
        if len(files) > EMPTY_CHECK_FILES:
            return None
        return sum(self._rows(f) for f, _ in files)

    @staticmethod
    def _rows(file: str) -> int:

        def count() -> int:
            with open_input(file) as f:
                return parquet_file(f, file).metadata.num_rows

        return remote(count, file)

    def read_files(self, params: ParquetParams, files: list[str]):
        """Read with Ray Data's Parquet reader. The core builds every source's read with Ray
        Data's first Parquet reader, which streams a file in batches
        (:func:`pipeline.execute.ray_internals.first_parquet_reader`).

        Measured with Ray Data 2.60 on 2 CPUs (benchmarks/RESULTS.md): its default (second)
        reader lists files in a task of its own, which asks for a whole CPU and waits forever
        behind actor pools that hold the rest, and reads a 1,000,000-row file as one block
        (first block after 1.6-4.0 s, against 0.35-0.55 s, all rows after 1.0-1.2 s).
        """
        import ray.data

        kwargs = self.read_options(files)
        if params.columns:
            kwargs["columns"] = params.columns
        unified = self._unified(params)
        if params.schema_ or unified is not None:
            stored = unified if unified is not None else self._stored(files[0])
            kwargs["schema"] = _declared_over(stored, params)
        return ray.data.read_parquet(files, file_extensions=None, **kwargs)

    @staticmethod
    def _stored(file: str) -> Any:
        import pyarrow.parquet as pq

        with open_input(file) as f:
            return pq.ParquetFile(f).schema_arrow

    def check_file(self, params: ParquetParams, f: Any) -> None:
        import pyarrow.parquet as pq

        declared = params.declared()
        for batch in pq.ParquetFile(f).iter_batches(columns=params.columns):
            for field in declared:
                if field.name in batch.schema.names:
                    batch.column(field.name).cast(field.type)


def unify_footers(footers: list[tuple[str, Any]], params: TypedFileParams) -> Any:
    """The schema every file of ``footers`` (``(file, Arrow schema)``, the first first) is read
    with: the first file's columns, each widened to a type that holds every file's values
    unchanged (int32 and int64: int64; float32 and float64: float64; see
    :func:`plugins.arrow_types.fits`). A file without a column gives nulls; columns only later
    files have are not read. Columns ``source.params.schema`` declares are not compared (each
    file is cast to the declared type), nor columns left out by ``source.params.columns``.

    Raises :class:`DataError` (``source.params.path``) naming the column and two files whose
    types no type holds unchanged (a string and a double, an int64 and a double).
    """
    import pyarrow as pa

    from pipeline.contract.schema import type_name
    from plugins.arrow_types import fits

    first_file, first = footers[0]
    skip = {f.name for f in params.declared()}
    wanted = set(params.columns or first.names) - skip
    types = {f.name: f.type for f in first if f.name in wanted}
    origin = dict.fromkeys(types, first_file)
    for file, schema in footers[1:]:
        for field in schema:
            name, have = field.name, field.type
            if name not in types or fits(have, types[name]):
                continue
            if fits(types[name], have):
                types[name], origin[name] = have, file
                continue
            try:
                wider = (
                    pa.unify_schemas(
                        [pa.schema([(name, types[name])]), pa.schema([(name, have)])],
                        promote_options="permissive",
                    )
                    .field(name)
                    .type
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                wider = None
            if wider is not None and fits(types[name], wider) and fits(have, wider):
                types[name] = wider
                continue
            both = (types[name], have)
            if any(pa.types.is_string(t) or pa.types.is_large_string(t) for t in both):
                suggested = "string"
            elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in both):
                suggested = "float64"
            else:
                suggested = type_name(have)
            raise DataError(
                f"column {name!r} is {type_name(types[name])} in {origin[name]} and "
                f"{type_name(have)} in {file}, and no type holds both unchanged. Declare the "
                f"type to convert them to (source.params.schema={{{name}: {suggested}}}) or "
                "read the files apart",
                key=KEY,
            )
    return pa.schema(
        [f.with_type(types.get(f.name, f.type)) for f in first], metadata=first.metadata
    )


def _with_columns(table: Any, schema: Any) -> Any:
    """``table`` with ``schema``'s columns in its order, a column it lacks as nulls."""
    import pyarrow as pa

    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names)


def _declared_over(schema: Any, params: TypedFileParams) -> Any:
    """``schema`` with the declared columns' types; declaring a missing column is an error."""
    import pyarrow as pa

    declared = params.declared()
    for field in declared:
        if field.name not in schema.names:
            from pipeline.contract.errors import ColumnNotFoundError

            raise ColumnNotFoundError.for_column(
                field.name, list(schema.names), key=f"source.params.schema.{field.name}"
            )
    types = {f.name: f.type for f in declared}
    return pa.schema(
        [pa.field(f.name, types.get(f.name, f.type)) for f in schema], metadata=schema.metadata
    )


class TextParams(FileParams):
    column: str = Field(default="text", description="Name of the column holding each line.")
    drop_empty_lines: bool = Field(default=True, description="Skip blank lines.")


class TextSource(FileSource):
    """Read text files, one row per line."""

    Params = TextParams
    reader = "read_text"
    file_extensions = None

    def file_schema(self, params: TextParams, files: list[tuple[str, int]]) -> Any:
        import pyarrow as pa

        if all(size == 0 for _, size in files):
            raise empty_input(params.path, "its files are empty")
        return pa.schema([pa.field(params.column, pa.string())])

    def head(self, params: TextParams, file: str, size: int, schema: Any) -> tuple[Any, int]:
        import pyarrow as pa

        data = whole_lines(read_head(file))
        lines = data.decode("utf-8", errors="replace").splitlines()
        if params.drop_empty_lines:
            lines = [line for line in lines if line.strip()]
        return pa.table({params.column: pa.array(lines, pa.string())}), len(data)

    def read_file(self, params: TextParams, file: str) -> Iterator[Any]:
        """The file's lines (decompressed where its name says so) as Ray Data's ``read_text``
        splits them (``str.splitlines``), empty ones dropped when ``drop_empty_lines``."""
        import pyarrow as pa

        lines = read_text(file).decode("utf-8").splitlines()
        if params.drop_empty_lines:
            lines = [line for line in lines if line.strip() != ""]
        for start in range(0, len(lines), LINES_PER_TABLE):
            chunk = lines[start : start + LINES_PER_TABLE]
            yield pa.table({params.column: pa.array(chunk, pa.string())})

    def read_files(self, params: TextParams, files: list[str]):
        import ray.data

        ds = ray.data.read_text(
            files,
            drop_empty_lines=params.drop_empty_lines,
            file_extensions=None,
            **self.read_options(files),
        )
        if params.column != "text":
            ds = ds.rename_columns({"text": params.column})
        return ds
