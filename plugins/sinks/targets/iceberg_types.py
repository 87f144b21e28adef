"""Arrow columns as an Iceberg table holds them (format version 2).

:func:`iceberg_arrow_schema` maps the plan's output schema to Arrow types that pyiceberg turns
into Iceberg types without loss or surprise; the writer casts every block to it, so the Parquet
files match the table exactly:

=============================  ==========================  =====================================
Arrow                          written as                  Iceberg
=============================  ==========================  =====================================
int8, int16, uint8, uint16     int32                       int
uint32                         int64                       long (pyiceberg alone would make it a
                                                           32-bit int and overflow)
uint64                         refused                     (no unsigned 64-bit type)
float16                        float32                     float
fixed_size_list<T, n>          list<T>                     list (the length is not kept)
large_list, large_string,      list, string, binary        list, string, binary
string_view, large_binary
dictionary<K, V>               V                           V's type
timestamp[s|ms|us]             timestamp[us]               timestamp
timestamp[ns]                  timestamp[us]               timestamp (nanoseconds truncated, as
                                                           pyiceberg's own downcast option does)
timestamp[*, tz=any]           timestamp[us, tz=UTC]       timestamptz (same instants)
date64                         date32                      date
time32, time64[ns]             time64[us]                  time
null, duration, month-day-     refused                     (no such type in format version 2)
nano interval, union
=============================  ==========================  =====================================

Struct and map columns are mapped field by field.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.contract.errors import DataError


class _Unsupported(Exception):
    pass


def _iceberg_type(t: pa.DataType) -> pa.DataType:
    types = pa.types
    if types.is_dictionary(t):
        return _iceberg_type(t.value_type)
    if types.is_int8(t) or types.is_int16(t) or types.is_uint8(t) or types.is_uint16(t):
        return pa.int32()
    if types.is_uint32(t):
        return pa.int64()
    if types.is_uint64(t):
        raise _Unsupported("unsigned 64-bit integers (Iceberg has no unsigned types)")
    if types.is_float16(t):
        return pa.float32()
    if types.is_large_string(t) or types.is_string_view(t):
        return pa.string()
    if types.is_large_binary(t) or types.is_binary_view(t):
        return pa.binary()
    if types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz is not None else None)
    if types.is_date64(t):
        return pa.date32()
    if types.is_time(t):
        return pa.time64("us")
    if (
        types.is_list(t)
        or types.is_large_list(t)
        or types.is_fixed_size_list(t)
        or types.is_list_view(t)
        or types.is_large_list_view(t)
    ):
        return pa.list_(_iceberg_field(t.value_field))
    if types.is_map(t):
        return pa.map_(_iceberg_field(t.key_field), _iceberg_field(t.item_field))
    if types.is_struct(t):
        return pa.struct([_iceberg_field(t.field(i)) for i in range(t.num_fields)])
    if types.is_null(t):
        raise _Unsupported("the null type (a column with no values typed yet)")
    if types.is_duration(t) or types.is_interval(t):
        raise _Unsupported(f"{t} (Iceberg has no duration or interval type)")
    if types.is_union(t):
        raise _Unsupported(f"{t} (Iceberg has no union type)")
    return t  # bool, int32/64, float32/64, decimal, string, binary, fixed_size_binary, date32


def _iceberg_field(field: pa.Field) -> pa.Field:
    return pa.field(field.name, _iceberg_type(field.type), nullable=field.nullable)


def iceberg_arrow_schema(schema: pa.Schema, *, key: str = "sink") -> pa.Schema:
    """``schema`` with every column mapped as the module docstring's table says.

    Raises :class:`DataError` (``key``) naming the first column Iceberg cannot hold.
    """
    fields = []
    for field in schema:
        try:
            fields.append(_iceberg_field(field))
        except _Unsupported as exc:
            raise DataError(
                f"column {field.name!r} ({field.type}) cannot be stored in an Iceberg table: "
                f"{exc}. Cast or drop it before the sink (e.g. a select_columns preprocessor).",
                key=key,
            ) from None
    return pa.schema(fields)
