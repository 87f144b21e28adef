"""JSON lines files (one object per line), read with pyarrow's JSON reader and faithful types.

JSON has types of its own, and they are kept: a string stays a string (``"00123"``, a 19-digit
id, an ISO date: pyarrow would turn the last into a timestamp, bulkinfer does not), an integer
stays an int64, nothing becomes a timestamp because of a column's name (Ray Data's own
``read_json(lines=True)`` goes through pandas, which did both). Types are inferred once, on the
driver, from the first :data:`~plugins.sources.files.SAMPLE_BYTES` of the first file, and every
file is read with exactly those types. A column whose values change type (a number in one row, a
string in another) is an error naming the file and the column, unless ``schema`` declares its
type: a declared ``string`` column then keeps each number's exact text.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

from pipeline.contract.errors import DataError
from plugins.sources.files import (
    SAMPLE_BYTES,
    FileSource,
    TypedFileParams,
    empty_input,
    read_head,
    read_text,
    select,
    whole_lines,
)

_CHANGED = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+) in row (\d+)")
_INT64 = (-(2**63), 2**63 - 1)


class JsonParams(TypedFileParams):
    pass


class _IntText(str):
    """An integer's exact JSON text."""


class _FloatText(str):
    """A number's exact JSON text, with a fraction or an exponent."""


def _is_timestamp(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind)


def _arrow_read(data: bytes, schema: Any) -> Any:
    import pyarrow as pa
    import pyarrow.json as pj

    block = max(1 << 20, min(len(data) + 1, (1 << 31) - 1))
    return pj.read_json(
        pa.BufferReader(data),
        read_options=pj.ReadOptions(use_threads=False, block_size=block),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
    )


def _texts_kept(table: Any, data: bytes, schema: Any, path: str) -> Any:
    """Re-read columns pyarrow made timestamps out of strings as the strings they are."""
    import pyarrow as pa

    inferred = [
        f.name for f in table.schema if f.name not in schema.names and _is_timestamp(f.type)
    ]
    if not inferred:
        return table
    fixed = pa.schema([*schema, *(pa.field(n, pa.string()) for n in inferred)])
    return _arrow_read(data, fixed).select(table.schema.names)


def read_json_lines(data: bytes, path: str, schema: Any, declared: Any) -> Any:
    """One file's rows as a ``pyarrow.Table`` with the columns of ``schema`` typed as there.

    ``declared`` holds the columns the user typed (``source.params.schema``); only those may
    hold values of mixed JSON types. Raises DataError naming the file (and column).
    """
    import pyarrow as pa

    if not data.strip():
        return schema.empty_table()
    try:
        return _texts_kept(_arrow_read(data, schema), data, schema, path)
    except pa.ArrowInvalid as exc:
        message = " ".join(str(exc).split())
        changed = _CHANGED.search(message)
        if changed and changed.group(1) not in declared.names:
            column, was, now, row = changed.groups()
            raise DataError(
                f"cannot read input file {path}: column {column!r} holds values of different "
                f"JSON types ({was}, then {now}). Declare its type, e.g. "
                f"source.params.schema={{{column}: string}}",
                key="source.params.path",
            ) from None
    # Declared columns of mixed types, or not JSON lines at all: Python's parser keeps exact
    # numbers, and names the line of a syntax error.
    return read_python(data, path, schema, declared)


def read_python(data: bytes, path: str, schema: Any, declared: Any) -> Any:
    """The slow path for declared columns of mixed JSON types: Python's ``json`` keeps each
    number's exact text, converted to the declared type (a number into a ``string`` column
    keeps its digits; ``1.5`` into an integer column is an error)."""
    import pyarrow as pa

    rows = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line, parse_int=_IntText, parse_float=_FloatText))
            except ValueError as exc:
                raise DataError(
                    f"cannot read input file {path}: line {number}: {exc}",
                    key="source.params.path",
                ) from None
    names = list(dict.fromkeys([*schema.names, *(k for row in rows for k in row)]))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        kind = schema.field(name).type if name in schema.names else None
        try:
            columns[name] = _column(values, kind, name in declared.names)
        except (ValueError, TypeError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read input file {path}: column {name!r}: {' '.join(str(exc).split())}",
                key="source.params.path",
            ) from None
    return pa.table(columns)


def _plain(value: Any) -> Any:
    if isinstance(value, _IntText):
        number = int(value)
        if not _INT64[0] <= number <= _INT64[1]:
            raise ValueError(f"integer {value} is beyond the int64 range")
        return number
    if isinstance(value, _FloatText):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, str) else value


def _column(values: list[Any], kind: Any, declared: bool) -> Any:
    import pyarrow as pa

    if declared and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        out = []
        for v in values:
            if isinstance(v, (dict, list)):
                raise ValueError(f"holds a JSON {type(v).__name__}, not text: {json.dumps(v)}")
            out.append(
                None if v is None else ("true" if v is True else "false" if v is False else str(v))
            )
        return pa.array(out, kind)
    plain = [_plain(v) for v in values]
    return pa.array(plain, kind) if kind is not None else pa.array(plain)


def _sample_lines(data: bytes, complete: bool) -> bytes:
    """Whole lines of a file's head (the last, cut one dropped unless the file ended)."""
    if complete:
        return data
    return data[: data.rfind(b"\n") + 1]


def infer_schema(sample: bytes, path: str, declared: Any) -> Any:
    """The columns of ``sample`` (whole JSON lines) with their types, as read will give them:
    strings stay strings, declared columns take their declared type, columns that hold only
    nulls so far are left to each file (``null``), integers beyond int64 are refused."""
    import pyarrow as pa

    names_declared = {f.name: f.type for f in declared}
    try:
        table = read_json_lines(sample, path, declared, declared)
    except DataError:
        raise
    fields = []
    for field in table.schema:
        kind = names_declared.get(field.name, field.type)
        if field.name not in names_declared and pa.types.is_floating(kind):
            _refuse_big_integers(sample, path, field.name)
        if not pa.types.is_null(kind):
            fields.append(pa.field(field.name, kind))
    missing = sorted(set(names_declared) - set(table.schema.names))
    if missing and table.num_rows:
        from pipeline.contract.errors import ColumnNotFoundError

        raise ColumnNotFoundError.for_column(
            missing[0], list(table.schema.names), key=f"source.params.schema.{missing[0]}"
        )
    return pa.schema(fields), table.num_rows


def _refuse_big_integers(sample: bytes, path: str, column: str) -> None:
    for line in io.BytesIO(sample):
        if not line.strip():
            continue
        value = json.loads(line).get(column)
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64[0] <= value <= _INT64[1]:
                raise DataError(
                    f"input file {path}: column {column!r} holds the integer {value}, beyond "
                    "the int64 range (it would be read as an inexact float). Declare its type: "
                    f"source.params.schema={{{column}: string}} keeps the digits, float64 "
                    "rounds them",
                    key="source.params.path",
                )


class JsonSource(FileSource):
    """Read JSON lines files (one object per line), keeping JSON's types."""

    Params = JsonParams
    reader = "read_json"
    file_extensions = (
        "json",
        "jsonl",
        "json.gz",
        "jsonl.gz",
        "json.br",
        "jsonl.br",
        "json.zst",
        "jsonl.zst",
        "json.lz4",
        "jsonl.lz4",
    )

    def file_schema(self, params: JsonParams, files: list[tuple[str, int]]) -> Any:
        return select(self.read_schema(params, files), params.columns)

    def read_schema(self, params: JsonParams, files: list[tuple[str, int]]) -> Any:
        """Every column of the files with its type, inferred from the first non-empty file."""
        cached = getattr(self, "_schema", None)
        if cached is not None and cached[0] == params.model_dump_json():
            return cached[1]
        declared = params.declared()
        first = next(((f, size) for f, size in files if size), None)
        if first is None:
            raise empty_input(params.path, "its files are empty")
        head = read_head(first[0])
        complete = len(head) < SAMPLE_BYTES  # the whole file (decompressed)
        sample = _sample_lines(head, complete=complete)
        schema, rows = infer_schema(sample, first[0], declared)
        if rows == 0 and len(files) == 1 and complete:
            raise empty_input(params.path, "no JSON objects in it")
        self._schema = (params.model_dump_json(), schema)
        return schema

    def head(self, params: JsonParams, file: str, size: int, schema: Any) -> tuple[Any, int]:
        data = whole_lines(read_head(file))
        full = self.read_schema(params, self.files(params))
        table = read_json_lines(data, file, full, params.declared())
        return table.select(schema.names).cast(schema), len(data)

    def read_files(self, params: JsonParams, files: list[str]):
        import ray.data

        from plugins.sources.json_datasource import JsonLinesDatasource

        datasource = JsonLinesDatasource(
            files,
            schema=self.read_schema(params, self.files(params)),
            declared=params.declared(),
            file_extensions=None,
        )
        ds = ray.data.read_datasource(datasource, **self.read_options(files))
        return ds.select_columns(params.columns) if params.columns else ds

    def read_file(self, params: JsonParams, file: str) -> Iterator[Any]:
        """The file (decompressed where its name says so) parsed as :func:`read_json_lines`
        parses every file of the job."""
        data = read_text(file)
        table = read_json_lines(
            data, file, self.read_schema(params, self.files(params)), params.declared()
        )
        yield table.select(params.columns) if params.columns else table

    def check_file(self, params: JsonParams, f: Any) -> None:
        schema = self.read_schema(params, self.files(params))
        read_json_lines(f.read(), "this file", schema, params.declared())
