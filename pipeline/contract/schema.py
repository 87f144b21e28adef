"""Column types in the plan: Arrow type names, declared against actual types, what a sink holds.

A job's plan carries the Arrow schema after every stage (the source's columns, then what each map
stage adds or replaces), so a sink that cannot hold a column, or a stage that reads a column of
the wrong type, is refused before any model loads. Nothing here imports Ray.

Type names are Arrow's (``int64``, ``float32``, ``string``, ``bool``, ``date32``,
``timestamp[us, tz=UTC]``, ``list<float32>``, ``fixed_size_list<float32>[384]``,
``decimal128(10, 2)``), as users write them in ``source.params.schema``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

#: Names accepted besides ``pyarrow.type_for_alias``'s own (``float32`` is Arrow's ``float``).
_ALIASES = {"str": "string", "text": "string", "boolean": "bool", "integer": "int64"}
_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]$")
_DECIMAL = re.compile(r"decimal(128|256)?\((\d+),\s*(-?\d+)\)$")
_LIST = re.compile(r"(large_list|list)<(.+)>$")
_FIXED_LIST = re.compile(r"fixed_size_list<(.+)>\[(\d+)\]$")

#: Extension types Ray Data falls back to for values Arrow cannot hold: pickled Python objects.
PYTHON_OBJECT_EXTENSIONS = ("ray.data.arrow_pickled_object",)

TYPE_FORMS = (
    "int8..int64, uint8..uint64, float16/32/64, bool, string, large_string, binary, date32, "
    "timestamp[s|ms|us|ns] or timestamp[us, tz=UTC], decimal128(p, s), list<T>, "
    "fixed_size_list<T>[n]"
)


def parse_type(name: str) -> pa.DataType:
    """An Arrow type from its name (see the module docstring); raises ``ValueError``."""
    import pyarrow as pa

    text = " ".join(str(name).strip().split()).lower()
    text = _ALIASES.get(text, text)
    if m := _TIMESTAMP.fullmatch(text):
        unit, tz = m.groups()
        if tz:
            tz = str(name).split("tz=", 1)[1].rstrip("] ").strip()  # zone names keep their case
        return pa.timestamp(unit, tz=tz)
    if m := _DECIMAL.fullmatch(text):
        bits, precision, scale = m.groups()
        make = pa.decimal256 if bits == "256" else pa.decimal128
        return make(int(precision), int(scale))
    if m := _FIXED_LIST.fullmatch(text):
        return pa.list_(parse_type(m.group(1)), int(m.group(2)))
    if m := _LIST.fullmatch(text):
        inner = parse_type(m.group(2))
        return pa.large_list(inner) if m.group(1) == "large_list" else pa.list_(inner)
    try:
        return pa.type_for_alias(text)
    except (ValueError, KeyError):
        raise ValueError(f"unknown Arrow type {name!r}; use one of: {TYPE_FORMS}") from None


def type_name(kind: pa.DataType) -> str:
    """The name :func:`parse_type` reads back: ``float32``, ``list<float32>``, ...

    Tensor extension types (one n-dimensional array per row) print as
    ``tensor<uint8>[224, 224, 3]``, ``?`` for a dimension that varies by row
    (``tensor<uint8>[?, ?, ?]``); those names are for reading, not for ``parse_type``.
    """
    import pyarrow as pa

    if pa.types.is_fixed_size_list(kind):
        return f"fixed_size_list<{type_name(kind.value_type)}>[{kind.list_size}]"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        prefix = "large_list" if pa.types.is_large_list(kind) else "list"
        return f"{prefix}<{type_name(kind.value_type)}>"
    if isinstance(kind, pa.BaseExtensionType):
        shape = getattr(kind, "shape", None)
        if "tensor" in kind.extension_name and shape is not None and hasattr(kind, "value_type"):
            # Ray Data's tensor types and Arrow's fixed_shape_tensor; None: a variable dimension.
            dims = ", ".join("?" if d is None else str(d) for d in shape)
            return f"tensor<{type_name(kind.value_type)}>[{dims}]"
        return kind.extension_name
    named = {pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64"}
    return named.get(kind, str(kind))


def parse_schema(columns: dict[str, str], key: str) -> pa.Schema:
    """``{column: type name}`` as a schema; raises ConfigError naming ``key.column``."""
    import pyarrow as pa

    from pipeline.contract.errors import ConfigError

    fields = []
    for column, name in columns.items():
        try:
            fields.append(pa.field(column, parse_type(name)))
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"{key}.{column}") from None
    return pa.schema(fields)


def is_python_object(kind: pa.DataType) -> bool:
    """True for Ray Data's fallback type of pickled Python objects (no reader can use them)."""
    import pyarrow as pa

    return isinstance(kind, pa.ExtensionType) and kind.extension_name in PYTHON_OBJECT_EXTENSIONS


def is_nested(kind: pa.DataType) -> bool:
    """Lists, structs, maps, unions and tensor extension types: not one scalar per row."""
    import pyarrow as pa

    if isinstance(kind, pa.ExtensionType):
        return True
    return pa.types.is_nested(kind)


def is_list_of(kind: pa.DataType) -> pa.DataType | None:
    """The element type of a list, large list or fixed-size list; else None."""
    import pyarrow as pa

    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return kind.value_type
    return None


def conforms(actual: pa.DataType, declared: pa.DataType) -> bool:
    """Whether values of type ``actual`` keep the promise of a ``declared`` type.

    Equal types conform. A declared ``list<T>`` also accepts a ``fixed_size_list<T>[n]`` and a
    ``large_list<T>`` (a stage that cannot know a vector's length before loading its model
    declares the list); ``string`` accepts ``large_string``; a declared ``null`` (a column that
    holds only nulls so far) accepts anything; an all-null batch conforms to any declaration.
    """
    import pyarrow as pa

    if actual == declared or pa.types.is_null(actual) or pa.types.is_null(declared):
        return True
    if pa.types.is_string(declared) and pa.types.is_large_string(actual):
        return True
    inner_declared = is_list_of(declared)
    inner_actual = is_list_of(actual)
    if inner_declared is not None and inner_actual is not None:
        if pa.types.is_fixed_size_list(declared) and declared != actual:
            return False
        return conforms(inner_actual, inner_declared)
    return False


def describe_schema(schema: pa.Schema) -> str:
    """``id: int64, text: string, embedding: fixed_size_list<float32>[384]``."""
    return ", ".join(f"{f.name}: {type_name(f.type)}" for f in schema)


def with_field(schema: pa.Schema, name: str, kind: pa.DataType) -> pa.Schema:
    """``schema`` with column ``name`` of type ``kind`` added at the end (replacing one of the
    same name, which moves to the end, as the built-in stages do)."""
    import pyarrow as pa

    fields = [f for f in schema if f.name != name]
    return pa.schema([*fields, pa.field(name, kind)], metadata=schema.metadata)
