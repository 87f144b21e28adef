"""A small, safe expression language for row conditions, evaluated column-wise with pyarrow.

The text is parsed with Python's ``ast`` module and only a whitelist of node types is accepted:
column names, literals, comparisons (``== != < <= > >= in, not in, is None, is not None``),
``and``/``or``/``not``, arithmetic (``+ - * / // % **``) and a few functions. Nothing is ever
passed to ``eval``: the tree is walked and each node becomes a ``pyarrow.compute`` call, so a
condition can read columns but cannot run code.

Examples: ``score > 0.5 and label == "POSITIVE"``, ``len(text) >= 20``,
``lang in ["en", "de"]``, ``text is not None and not startswith(text, "#")``,
``col("mean radius") < 15``.
"""

from __future__ import annotations

import ast
from typing import Any

#: Allowed functions -> how many string arguments follow the value (startswith(text, "a")).
FUNCTIONS: dict[str, int] = {
    "len": 0,
    "lower": 0,
    "upper": 0,
    "abs": 0,
    "startswith": 1,
    "endswith": 1,
    "contains": 1,
}
_COMPARE = {
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
}
_ARITHMETIC = {
    ast.Add: "add_checked",
    ast.Sub: "subtract_checked",
    ast.Mult: "multiply_checked",
    ast.Div: "divide",
    ast.Mod: None,  # x - floor(x / y) * y
    ast.FloorDiv: None,
    ast.Pow: "power_checked",
}


class ExpressionError(ValueError):
    """The condition is not in the accepted language; the message says what is not allowed."""


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(
        node.value, (str, int, float, bool, type(None))
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    raise ExpressionError(f"expected a literal value, got {ast.unparse(node)!r}")


class Condition:
    """A parsed condition: ``Condition("score > 0.5").mask(table)`` -> a boolean array."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self.tree = ast.parse(text.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(
                f"not a valid condition: {exc.msg} at column {exc.offset}"
            ) from None
        self.columns: list[str] = []
        self._check(self.tree)

    # -- validation: the whitelist --------------------------------------------------------------

    def _column(self, name: str) -> None:
        if name not in self.columns:
            self.columns.append(name)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            _literal(node)
        elif isinstance(node, ast.Name):
            if node.id in FUNCTIONS or node.id == "col":
                raise ExpressionError(f"{node.id} is a function; call it: {node.id}(...)")
            self._column(node.id)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            self._check(node.operand)
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.Compare):
            self._check(node.left)
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, (ast.In, ast.NotIn)):
                    if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                        raise ExpressionError("'in' needs a list of literals, e.g. x in [1, 2]")
                    for element in right.elts:
                        _literal(element)
                elif isinstance(op, (ast.Is, ast.IsNot)):
                    if not (isinstance(right, ast.Constant) and right.value is None):
                        raise ExpressionError("'is' and 'is not' compare with None only")
                elif type(op) in _COMPARE:
                    self._check(right)
                else:
                    raise ExpressionError(f"comparison {type(op).__name__} is not supported")
        elif isinstance(node, ast.Call):
            name, args = self._call_parts(node)
            if name == "col":
                if len(args) != 1 or not isinstance(_literal(args[0]), str):
                    raise ExpressionError('col() takes one column name: col("mean radius")')
                self._column(args[0].value)
                return
            if len(args) != 1 + FUNCTIONS[name]:
                raise ExpressionError(
                    f"{name}() takes {1 + FUNCTIONS[name]} argument(s), got {len(args)}"
                )
            self._check(args[0])
            for extra in args[1:]:
                if not isinstance(_literal(extra), str):
                    raise ExpressionError(f"{name}()'s second argument must be a string")
        else:
            raise ExpressionError(
                f"{ast.unparse(node)!r} is not allowed in a condition (only columns, literals, "
                "comparisons, and/or/not, arithmetic and the functions "
                f"{', '.join([*FUNCTIONS, 'col'])})"
            )

    @staticmethod
    def _call_parts(node: ast.Call) -> tuple[str, list[ast.AST]]:
        if node.keywords:
            raise ExpressionError("functions take positional arguments only")
        if isinstance(node.func, ast.Name) and (node.func.id in FUNCTIONS or node.func.id == "col"):
            return node.func.id, list(node.args)
        if isinstance(node.func, ast.Attribute) and node.func.attr in FUNCTIONS:
            return node.func.attr, [node.func.value, *node.args]  # text.lower() == lower(text)
        raise ExpressionError(
            f"{ast.unparse(node.func)!r} is not an allowed function; allowed: "
            f"{', '.join([*FUNCTIONS, 'col'])}"
        )

    # -- evaluation -----------------------------------------------------------------------------

    def mask(self, table: Any):
        """The condition over ``table``'s rows as a boolean array (null where undefined)."""
        import pyarrow as pa

        result = self._eval(self.tree, table)
        if isinstance(result, pa.Scalar) or not isinstance(result, (pa.Array, pa.ChunkedArray)):
            value = result.as_py() if isinstance(result, pa.Scalar) else result
            result = pa.array([value] * table.num_rows, pa.bool_())
        if not pa.types.is_boolean(result.type):
            raise ExpressionError(f"the condition gives {result.type} values, not true/false")
        return result

    def _eval(self, node: ast.AST, table: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        if isinstance(node, ast.Name):
            return table.column(node.id)
        if isinstance(node, ast.BoolOp):
            combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            result = self._eval(node.values[0], table)
            for value in node.values[1:]:
                result = combine(result, self._eval(value, table))
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self._eval(node.operand, table)
            if isinstance(node.op, ast.Not):
                return pc.invert(operand)
            return pc.negate_checked(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = self._eval(node.left, table), self._eval(node.right, table)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)):
                floored = pc.floor(pc.divide(pc.cast(left, pa.float64()), right))
                if isinstance(node.op, ast.FloorDiv):
                    return floored
                return pc.subtract(left, pc.multiply(floored, right))
            return pc.call_function(_ARITHMETIC[type(node.op)], [left, right])
        if isinstance(node, ast.Compare):
            result = None
            left = self._eval(node.left, table)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, (ast.In, ast.NotIn)):
                    values = pa.array([_literal(e) for e in right_node.elts])
                    part = pc.is_in(left, value_set=values)
                    part = pc.invert(part) if isinstance(op, ast.NotIn) else part
                    right = None
                elif isinstance(op, (ast.Is, ast.IsNot)):
                    part = pc.is_null(left) if isinstance(op, ast.Is) else pc.is_valid(left)
                    right = None
                else:
                    right = self._eval(right_node, table)
                    part = pc.call_function(_COMPARE[type(op)], [left, right])
                result = part if result is None else pc.and_kleene(result, part)
                left = right
            return result
        if isinstance(node, ast.Call):
            name, args = self._call_parts(node)
            if name == "col":
                return table.column(args[0].value)
            value = self._eval(args[0], table)
            kind = value.type
            if name == "len":
                if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                    return pc.utf8_length(value)
                return pc.list_value_length(value)
            if name in ("lower", "upper"):
                return pc.call_function(f"utf8_{name}", [value])
            if name == "abs":
                return pc.abs_checked(value)
            pattern = args[1].value
            function = {
                "startswith": "starts_with",
                "endswith": "ends_with",
                "contains": "match_substring",
            }[name]
            return pc.call_function(function, [value], pc.MatchSubstringOptions(pattern))
        raise ExpressionError(f"cannot evaluate {ast.unparse(node)!r}")  # _check prevents this
