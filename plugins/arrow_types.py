"""Arrow types compared by what they hold: whether values of one type are kept unchanged in
another (an existing table's column, the type several input files share)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def _list_like(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


#: Timestamp and time units, coarsest first: a finer unit holds every value of a coarser one.
_UNITS = ("s", "ms", "us", "ns")
#: Integer bits a float's mantissa holds exactly, by the float's bits.
_EXACT_INT_BITS = {16: 8, 32: 16, 64: 32}


def fits(have: pa.DataType, into: pa.DataType) -> bool:
    """Whether every value of Arrow type ``have`` is stored unchanged in a column of type
    ``into`` (an existing dataset's or table's column).

    Equal types fit; so do widenings that change no value: a wider integer (unsigned into a
    wider signed one), a wider float, an integer into a float whose mantissa holds it, a decimal
    with room for its digits, a finer time unit with the same time zone presence, string and
    binary into their large forms and back, lists element by element, structs field by field.
    A fixed-size list fits one of the same length only; a list of any length fits a fixed-size
    list (its rows are checked when written).
    """
    import pyarrow as pa

    t = pa.types
    if have == into or t.is_null(have):
        return True
    if t.is_dictionary(have):
        return fits(have.value_type, into)
    if t.is_dictionary(into):
        return fits(have, into.value_type)
    if _list_like(have) and _list_like(into):
        fixed = t.is_fixed_size_list(have) and t.is_fixed_size_list(into)
        if fixed and have.list_size != into.list_size:
            return False
        return fits(have.value_type, into.value_type)
    if t.is_integer(have) and t.is_integer(into):
        if t.is_signed_integer(have) and t.is_unsigned_integer(into):
            return False
        wider = into.bit_width > have.bit_width
        return wider or (
            into.bit_width == have.bit_width
            and t.is_signed_integer(have) == t.is_signed_integer(into)
        )
    if t.is_integer(have) and t.is_floating(into):
        return have.bit_width <= _EXACT_INT_BITS[into.bit_width]
    if t.is_floating(have) and t.is_floating(into):
        return into.bit_width >= have.bit_width
    if t.is_decimal(have) and t.is_decimal(into):
        digits = into.precision - into.scale >= have.precision - have.scale
        return digits and into.scale >= have.scale
    texts = (t.is_string, t.is_large_string, t.is_string_view)
    if any(f(have) for f in texts) and any(f(into) for f in texts):
        return True
    binaries = (t.is_binary, t.is_large_binary, t.is_binary_view)
    if any(f(have) for f in binaries) and any(f(into) for f in binaries):
        return True
    if (t.is_timestamp(have) and t.is_timestamp(into)) or (t.is_time(have) and t.is_time(into)):
        zoned = getattr(have, "tz", None) is None, getattr(into, "tz", None) is None
        return zoned[0] == zoned[1] and _UNITS.index(into.unit) >= _UNITS.index(have.unit)
    if t.is_date(have) and t.is_date(into):
        return True
    if t.is_struct(have) and t.is_struct(into):
        names = [into.field(i).name for i in range(into.num_fields)]
        return all(
            have.field(i).name in names
            and fits(have.field(i).type, into.field(have.field(i).name).type)
            for i in range(have.num_fields)
        )
    if t.is_map(have) and t.is_map(into):
        return fits(have.key_type, into.key_type) and fits(have.item_type, into.item_type)
    return False
