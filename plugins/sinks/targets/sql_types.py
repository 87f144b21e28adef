"""Arrow columns as SQL columns (through SQLAlchemy), per database, and their values.

====================================  ===================  ==================  ==================
Arrow                                 PostgreSQL           SQLite              other databases
====================================  ===================  ==================  ==================
bool                                  boolean              BOOLEAN (0/1)       BOOLEAN
int8, int16, uint8                    smallint             SMALLINT            SMALLINT
int32, uint16                         integer              INTEGER             INTEGER
int64, uint32                         bigint               BIGINT              BIGINT
uint64                                numeric(20)          refused             NUMERIC(20)
float16, float32                      real                 REAL                REAL
float64                               double precision     DOUBLE              DOUBLE
decimal128(p, s)                      numeric(p, s)        refused (REAL       NUMERIC(p, s)
                                                           would round it)
string, large_string, string_view     text                 TEXT                TEXT
binary, large_binary, fixed binary    bytea                BLOB                BLOB
date32, date64                        date                 DATE (text)         DATE
time                                  time                 TIME (text)         TIME
timestamp                             timestamp            DATETIME (text)     DATETIME
timestamp with a time zone            timestamptz (UTC)    DATETIME (UTC)      DATETIME (UTC)
duration                              interval             refused             refused
list / fixed-size list of scalars     ARRAY of the above   refused             refused
struct, map                           jsonb                refused             refused
null                                  refused              refused             refused
====================================  ===================  ==================  ==================

Timestamps keep microseconds (nanoseconds are truncated). A column listed in ``json_columns``
is stored as JSON instead, whatever its type: ``jsonb`` on PostgreSQL, JSON text elsewhere
(SQLite: a ``JSON``-declared column holding e.g. ``[0.25, -1.5]``; read it back with
``json.loads``). Lists become JSON arrays, structs and maps JSON objects, float32 values the
nearest float64 (``0.1`` reads back as ``0.10000000149011612``).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pipeline.errors import DataError


class _Unsupported(Exception):
    pass


def _scalar(t: pa.DataType, dialect: str) -> Any:
    types = pa.types
    if types.is_dictionary(t):
        return _scalar(t.value_type, dialect)
    if types.is_boolean(t):
        return sa.Boolean()
    if types.is_int8(t) or types.is_int16(t) or types.is_uint8(t):
        return sa.SmallInteger()
    if types.is_int32(t) or types.is_uint16(t):
        return sa.Integer()
    if types.is_int64(t) or types.is_uint32(t):
        return sa.BigInteger()
    if types.is_uint64(t):
        if dialect == "sqlite":
            raise _Unsupported("SQLite integers are signed 64-bit")
        return sa.Numeric(20, 0)
    if types.is_float16(t) or types.is_float32(t):
        return sa.REAL()
    if types.is_float64(t):
        return sa.Double()
    if types.is_decimal(t):
        if dialect == "sqlite":
            raise _Unsupported("SQLite keeps decimals as floating point (they would round)")
        return sa.Numeric(t.precision, t.scale)
    if types.is_string(t) or types.is_large_string(t) or types.is_string_view(t):
        return sa.Text()
    if (
        types.is_binary(t)
        or types.is_large_binary(t)
        or types.is_fixed_size_binary(t)
        or types.is_binary_view(t)
    ):
        return sa.LargeBinary()
    if types.is_date(t):
        return sa.Date()
    if types.is_time(t):
        return sa.Time()
    if types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if types.is_duration(t):
        if dialect != "postgresql":
            raise _Unsupported(f"{dialect} has no interval type")
        return sa.Interval()
    return None


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def sql_type(field: pa.Field, dialect: str, as_json: bool = False) -> Any:
    """The SQLAlchemy type of ``field`` in ``dialect`` (``"sqlite"``, ``"postgresql"``, ...).

    Raises ``_Unsupported`` (use :func:`sql_columns`) when the database cannot hold it.
    """
    t = field.type
    if pa.types.is_null(t):
        raise _Unsupported("the null type (a column with no values typed yet)")
    if as_json:
        return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    scalar = _scalar(t, dialect)
    if scalar is not None:
        return scalar
    if dialect == "postgresql":
        if _is_list(t):
            item = _scalar(t.value_type, dialect)
            if item is None:
                raise _Unsupported(
                    f"PostgreSQL arrays hold scalars, not {t.value_type}; store it as JSON"
                )
            return postgresql.ARRAY(item)
        if pa.types.is_struct(t) or pa.types.is_map(t):
            return postgresql.JSONB()
    kind = "array" if _is_list(t) else "nested" if pa.types.is_nested(t) else f"{t}"
    raise _Unsupported(f"{dialect} has no {kind} type")


def sql_columns(
    schema: pa.Schema, dialect: str, json_columns: list[str], *, key: str = "sink"
) -> list[sa.Column]:
    """One nullable :class:`sqlalchemy.Column` per field of ``schema``.

    Raises :class:`DataError` (``key``) naming the first column ``dialect`` cannot hold and
    what to do about it.
    """
    columns = []
    for field in schema:
        try:
            columns.append(
                sa.Column(field.name, sql_type(field, dialect, field.name in json_columns))
            )
        except _Unsupported as exc:
            hint = (
                f" Store it as JSON with sink.params.json_columns=[{field.name}], or drop it."
                if not pa.types.is_null(field.type)
                else " Drop it or give it a type before the sink."
            )
            raise DataError(
                f"column {field.name!r} ({field.type}) cannot be stored in a {dialect} table: "
                f"{exc}.{hint}",
                key=key,
            ) from None
    return columns


def _json_value(value: Any, t: pa.DataType) -> Any:
    """A ``to_pylist`` value made JSON-able (maps become objects)."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return {str(k): _json_value(v, t.item_type) for k, v in value}
    if pa.types.is_struct(t):
        return {
            t.field(i).name: _json_value(value[t.field(i).name], t.field(i).type)
            for i in range(t.num_fields)
        }
    if _is_list(t):
        return [_json_value(v, t.value_type) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (int, float, str, bool)):
        return value
    return json.loads(json.dumps(value, default=str))


def _values(column: pa.ChunkedArray, as_json: bool) -> list[Any]:
    t = column.type
    if pa.types.is_dictionary(t):
        column, t = column.cast(t.value_type), t.value_type
    if pa.types.is_timestamp(t):  # microseconds, and UTC for instants
        column = column.cast(pa.timestamp("us", tz="UTC" if t.tz else None), safe=False)
    if pa.types.is_time64(t) and t.unit == "ns":
        column = column.cast(pa.time64("us"), safe=False)
    values = column.to_pylist()
    if as_json or pa.types.is_struct(t) or pa.types.is_map(t):
        return [_json_value(v, t) for v in values]
    return values


def sql_rows(table: pa.Table, json_columns: list[str]) -> list[dict[str, Any]]:
    """``table``'s rows as ``{column: value}`` dicts ready for SQLAlchemy's ``insert``."""
    names = table.column_names
    columns = [_values(table.column(n), n in json_columns) for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
