"""CSV files (RFC 4180) with a header row, read with pyarrow's CSV reader and faithful types.

CSV carries no types, so they are inferred once, on the driver, from the first block of the first
file (pyarrow's own inference), and every file is then read with exactly those types. Inference
never changes a value: a column whose text holds a number with leading zeros (``00123``) or an
integer beyond the int64 range stays a string, and only empty unquoted fields are null by
default (``NA``, ``null`` and ``NaN`` stay text in a text column; ``nan`` in a float column is
the float NaN). Quoted fields may hold line breaks, quotes (doubled) and delimiters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import Field, field_validator

from pipeline.contract.errors import DataError
from plugins.sources.files import (
    SAMPLE_BYTES,
    FileSource,
    TypedFileParams,
    empty_input,
    open_stream,
    remote,
    select,
)

_LEADING_ZERO = r"^[+-]?0[0-9]"
_INTEGER = r"^[+-]?[0-9]+$"
_COLUMN_NUMBER = re.compile(r"In CSV column #(\d+): ")


class CsvParams(TypedFileParams):
    delimiter: str = Field(default=",", description="The field separator (one character).")
    quote_char: str | None = Field(
        default='"',
        description="The quoting character (one character; doubled inside a quoted field); "
        "null: fields are never quoted.",
    )
    null_values: list[str] = Field(
        default_factory=lambda: [""],
        description='Unquoted field values read as null. A quoted empty field ("") is an '
        "empty string, never null.",
    )

    @field_validator("delimiter", "quote_char")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"must be exactly one character, got {value!r}")
        return value


def parse_options(params: CsvParams) -> Any:
    import pyarrow.csv as pcsv

    return pcsv.ParseOptions(
        delimiter=params.delimiter,
        quote_char=params.quote_char if params.quote_char is not None else False,
        double_quote=True,
        newlines_in_values=True,
    )


def convert_options(
    params: CsvParams, types: dict[str, Any] | None = None, select: bool = True
) -> Any:
    import pyarrow.csv as pcsv

    return pcsv.ConvertOptions(
        column_types=types or {},
        null_values=list(params.null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        include_columns=list(params.columns) if params.columns and select else [],
    )


def read_options(block_size: int | None = None) -> Any:
    import pyarrow.csv as pcsv

    if block_size:
        return pcsv.ReadOptions(use_threads=False, block_size=block_size)
    return pcsv.ReadOptions(use_threads=False)


def _first_block(file: str, params: CsvParams, types: dict[str, Any] | None) -> Any:
    """The first block (about SAMPLE_BYTES) of ``file`` as a table, with ``types`` fixed."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def read() -> Any:
        with open_stream(file) as f:
            reader = pcsv.open_csv(
                f,
                read_options=read_options(SAMPLE_BYTES),
                parse_options=parse_options(params),
                convert_options=convert_options(params, types, select=False),
            )
            try:
                return pa.Table.from_batches([reader.read_next_batch()])
            except StopIteration:
                return reader.schema.empty_table()

    return remote(read, file)


def infer_types(sample: Any, text: Any) -> dict[str, Any]:
    """Column -> type: pyarrow's inference on ``sample``, except that a numeric column whose
    text (``text``: the same rows read as strings) has leading zeros or integers beyond int64
    is kept as a string, so no value changes; timestamps in microseconds where they fit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    types = {}
    for field in sample.schema:
        kind = field.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            raw = text.column(field.name)
            zeros = pc.any(pc.match_substring_regex(raw, _LEADING_ZERO)).as_py()
            overflow = (
                not pa.types.is_integer(kind)
                and pc.all(pc.match_substring_regex(raw, _INTEGER)).as_py()
            )
            if zeros or overflow:
                kind = pa.string()
        elif pa.types.is_null(kind):  # no value in the sample: text until shown otherwise
            kind = pa.string()
        elif pa.types.is_timestamp(kind) and kind.unit == "ns":
            # Text has no unit; pyarrow picks nanoseconds for any fraction. Microseconds (as
            # Parquet and Python's datetime keep them) when the sample's values fit exactly.
            micro = pa.timestamp("us", tz=kind.tz)
            try:
                sample.column(field.name).cast(micro, safe=True)
                kind = micro
            except pa.ArrowInvalid:
                pass
        types[field.name] = kind
    return types


def named(exc: BaseException, names: list[str] | None) -> str:
    """pyarrow's CSV error with the column named (``In CSV column #2`` -> ``column 'id'``)."""
    message = " ".join(str(exc).split())
    m = _COLUMN_NUMBER.search(message)
    if m and names is not None and int(m.group(1)) < len(names):
        name = names[int(m.group(1))]
        message = _COLUMN_NUMBER.sub(f"column {name!r}: ", message, count=1)
        message += f". Declare its type, e.g. source.params.schema={{{name}: string}}"
    return message


class CsvSource(FileSource):
    """Read CSV files with a header row (RFC 4180; types inferred without changing values)."""

    Params = CsvParams
    reader = "read_csv"
    file_extensions = None  # as Ray Data's read_csv: every file of a folder

    def file_schema(self, params: CsvParams, files: list[tuple[str, int]]) -> Any:
        import pyarrow as pa

        types = self.file_types(params, files[0][0])
        if len(files) == 1 and self._sample_rows == 0 and files[0][1] <= SAMPLE_BYTES:
            raise empty_input(params.path, "a header without rows")
        schema = pa.schema([pa.field(n, t) for n, t in types.items()])
        return select(schema, params.columns)

    def file_types(self, params: CsvParams, first: str) -> dict[str, Any]:
        """Every column of the files (header order) -> its type, inferred from ``first``."""
        import pyarrow as pa

        cached = getattr(self, "_types", None)
        if cached is not None and cached[0] == (params.model_dump_json(), first):
            return cached[1]
        declared = {f.name: f.type for f in params.declared()}
        try:
            sample = _first_block(first, params, declared)
            strings = {name: pa.string() for name in sample.schema.names}
            text = _first_block(first, params, strings)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"cannot read input file {first}: {named(exc, None)}", key="source.params.path"
            ) from None
        types = {**infer_types(sample, text), **declared}
        missing = sorted(set(declared) - set(sample.schema.names))
        if missing:
            from pipeline.contract.errors import ColumnNotFoundError

            raise ColumnNotFoundError.for_column(
                missing[0], list(sample.schema.names), key=f"source.params.schema.{missing[0]}"
            )
        self._sample_rows = sample.num_rows
        self._types = ((params.model_dump_json(), first), types)
        return types

    def head(self, params: CsvParams, file: str, size: int, schema: Any) -> tuple[Any, int]:
        types = self.file_types(params, self.files(params)[0][0])
        table = _first_block(file, params, types).select(schema.names)
        return table, min(size, SAMPLE_BYTES)

    def read_files(self, params: CsvParams, files: list[str]):
        import ray.data

        types = self.file_types(params, self.files(params)[0][0])
        return ray.data.read_csv(
            files,
            file_extensions=None,
            read_options=read_options(),
            parse_options=parse_options(params),
            convert_options=convert_options(params, types),
            **self.read_options(files),
        )

    def read_file(self, params: CsvParams, file: str) -> Iterator[Any]:
        """The file streamed by pyarrow's CSV reader with the job's types (decompressed where
        its name says so); a value that does not convert is a DataError naming its column (not
        ``#2``)."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        types = self.file_types(params, self.files(params)[0][0])
        schema = self.schema(params)
        with open_stream(file) as f:
            try:
                reader = pcsv.open_csv(
                    f,
                    read_options=read_options(),
                    parse_options=parse_options(params),
                    convert_options=convert_options(params, types),
                )
                for batch in reader:
                    table = pa.Table.from_batches([batch]).select(schema.names)
                    yield table if table.schema.equals(schema) else table.cast(schema)
            except DataError:
                raise
            except Exception as exc:
                raise DataError(
                    f"cannot read input file {file}: {named(exc, list(types))}",
                    key="source.params.path",
                ) from None

    def check_file(self, params: CsvParams, f: Any) -> None:
        import pyarrow.csv as pcsv

        types = self.file_types(params, self.files(params)[0][0])
        try:
            reader = pcsv.open_csv(
                f,
                read_options=read_options(),
                parse_options=parse_options(params),
                convert_options=convert_options(params, types, select=False),
            )
            for _ in reader:
                pass
        except Exception as exc:
            raise DataError(named(exc, list(types)), key="source.params.path") from None
