"""Structured output: a reply that must be JSON matching a schema, split into columns.

The schema is a JSON schema of an object (``{"type": "object", "properties": {...}}``). Each
top-level property becomes a column of the Arrow type its JSON type maps to (string -> string,
integer -> int64, number -> float64, boolean -> bool; arrays, objects and anything else -> the
value as JSON text); a property the reply leaves out is null. Validation uses ``jsonschema``
with the draft the schema names (``$schema``), else the latest.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A reply wrapped in a Markdown code fence, as chat models often write JSON.
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(?P<body>.*?)\n?\s*```\s*$", re.S)
_SIMPLE = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool"}


class StructuredOutputError(ValueError):
    """A reply is not JSON, or does not match the schema (fails its row, never retried)."""


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``schema`` is a valid JSON schema of an object with
    ``properties`` (pydantic turns it into a config error naming ``response_format``)."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from None
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise ValueError(
            'must be the JSON schema of an object, e.g. {"type": "object", "properties": '
            '{"label": {"type": "string"}}}: each property becomes a column'
        )
    if not schema["properties"]:
        raise ValueError("the schema's object has no properties, so it would give no column")


def _json_type(spec: Any) -> str | None:
    """The one non-null JSON type of a property schema, or None when it is not one simple type."""
    if not isinstance(spec, dict):
        return None
    kind = spec.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and "enum" in spec:
        values = [v for v in spec["enum"] if v is not None]
        if values and all(isinstance(v, str) for v in values):
            kind = "string"
    return kind if isinstance(kind, str) else None


class StructuredOutput:
    """Validates replies against ``schema`` and turns them into column values."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        check_schema(schema)
        self.schema = schema
        self.validator = jsonschema.validators.validator_for(schema)(schema)
        self.properties: dict[str, Any] = schema["properties"]

    @property
    def columns(self) -> list[str]:
        """Column names, one per top-level property, in the schema's order."""
        return list(self.properties)

    def arrow_types(self) -> dict[str, Any]:
        """Column -> ``pyarrow.DataType`` (text holding JSON for non-simple properties)."""
        import pyarrow as pa

        return {
            name: getattr(pa, _SIMPLE.get(_json_type(spec) or "", "string"))()
            for name, spec in self.properties.items()
        }

    def parse(self, text: str | None) -> dict[str, Any]:
        """Column -> value for one reply.

        A reply in a Markdown code fence is unwrapped first. Raises
        :class:`StructuredOutputError` when the text is not JSON or does not match the schema
        (the message names the first violation and its path).
        """
        if text is None:
            raise StructuredOutputError("the reply has no text")
        fenced = _FENCE.match(text)
        body = fenced["body"] if fenced else text
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            raise StructuredOutputError(
                f"the reply is not JSON ({exc.msg} at char {exc.pos}): {_clip(text)}"
            ) from None
        error = next(iter(sorted(self.validator.iter_errors(value), key=str)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise StructuredOutputError(
                f"the reply does not match response_format at {where}: {error.message}; "
                f"reply: {_clip(text)}"
            )
        return {name: self._cell(name, value.get(name)) for name in self.properties}

    def _cell(self, name: str, value: Any) -> Any:
        if value is None or _json_type(self.properties[name]) in _SIMPLE:
            if _json_type(self.properties[name]) == "number" and isinstance(value, int):
                return float(value)
            return value
        return json.dumps(value, ensure_ascii=False)


def _clip(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
