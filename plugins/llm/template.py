"""Prompt templates: ``str.format`` fields that name a row's columns.

``"Summarize: {text}"`` reads column ``text``; ``{{`` and ``}}`` are literal braces; a format
spec or conversion is allowed (``{score:.2f}``, ``{title!r}``). Attribute and index access
(``{text.upper}``, ``{items[0]}``) is refused when the template is parsed: a config must not
reach into Python objects.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.contract.errors import ColumnNotFoundError, DataError

_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The column names ``template`` reads, in order of first use.

    Raises ``ValueError`` (pydantic turns it into a config error) for a malformed template, a
    positional field (``{}`` or ``{0}``) or attribute/index access.
    """
    fields: list[str] = []
    for _, name, spec, _ in _FORMATTER.parse(template):
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError(
                f"template field {{{name}}} has no column name; write {{column}}, or {{{{ "
                "for a literal brace"
            )
        if "." in name or "[" in name:
            raise ValueError(
                f"template field {{{name}}} uses attribute or index access; only plain column "
                "names are allowed"
            )
        if spec and "{" in spec:
            raise ValueError(f"template field {{{name}:{spec}}} nests a field in its format")
        if name not in fields:
            fields.append(name)
    return fields


class PromptTemplate:
    """A parsed template; ``key`` is its config key, for messages (e.g. ``params.prompt``)."""

    def __init__(self, template: str, key: str) -> None:
        self.template = template
        self.key = key
        self.fields = template_fields(template)

    def require(self, columns: Sequence[str]) -> None:
        """Raise :class:`ColumnNotFoundError` naming the key for a field not in ``columns``."""
        for name in self.fields:
            if name not in columns:
                raise ColumnNotFoundError(
                    f"the template reads column {name!r}, which is not in the data; available "
                    f"columns: {', '.join(columns) or '(none)'}",
                    key=self.key,
                )

    def render(self, row: Mapping[str, Any]) -> str:
        """The text for one row (a mapping column -> value).

        Raises :class:`ColumnNotFoundError` for a missing column (not a row's fault: every row
        lacks it) and :class:`DataError` for a null value in this row.
        """
        for name in self.fields:
            if name not in row:
                self.require(list(row))
            if row[name] is None:
                raise DataError(f"column {name!r} is null in this row", key=self.key)
        return self.template.format_map({name: row[name] for name in self.fields})
