"""The filter condition language: what it accepts, what it refuses, and what it computes.

No Ray here: conditions are parsed and evaluated on small pyarrow tables.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from plugins.preprocessors.expressions import Condition, ExpressionError

TABLE = pa.table(
    {
        "text": ["hello world", "Hi", None, "# comment", "another line"],
        "score": [0.9, 0.2, 0.5, None, 0.7],
        "lang": ["en", "de", "en", "fr", "en"],
        "n": [1, 2, 3, 4, 5],
        "mean radius": [10.0, 20.0, 30.0, 40.0, 50.0],
    }
)


def kept(condition: str) -> list[bool | None]:
    return Condition(condition).mask(TABLE).to_pylist()


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("score > 0.5", [True, False, False, None, True]),
        ("score >= 0.5 and lang == 'en'", [True, False, True, False, True]),  # null and False
        ("lang in ['de', 'fr'] or n == 1", [True, True, False, True, False]),
        ("lang not in ('en',)", [False, True, False, True, False]),
        ("text is None", [False, False, True, False, False]),
        ("text is not None and len(text) > 5", [True, False, False, True, True]),
        ("not startswith(text, '#')", [True, True, None, False, True]),
        ("text.lower().startswith('h')", [True, True, None, False, False]),
        ("contains(upper(text), 'LINE')", [False, False, None, False, True]),
        ("n % 2 == 0", [False, True, False, True, False]),
        ("n // 2 == 1", [False, True, True, False, False]),
        ("n * 2 + 1 > 6 - -1", [False, False, False, True, True]),
        ("1 < n < 4", [False, True, True, False, False]),
        ("abs(n - 3) <= 1", [False, True, True, True, False]),
        ('col("mean radius") >= 30', [False, False, True, True, True]),
        ("n ** 2 > 10", [False, False, False, True, True]),
    ],
)
def test_conditions_compute_row_by_row(condition, expected):
    assert kept(condition) == expected


def test_the_condition_lists_the_columns_it_reads():
    condition = Condition('len(text) > 3 and col("mean radius") > 1 and lang in ["en"]')
    assert condition.columns == ["text", "mean radius", "lang"]


@pytest.mark.parametrize(
    "condition",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "text.__class__",
        "(lambda: 1)()",
        "[x for x in text]",
        "text[0] == 'h'",
        "eval('1')",
        "n if n else 0",
        "len(text, 2) > 1",
        "startswith(text, lang)",
        "score is 0.5",
        "lang in other_column",
        "x := 1",
        "f'{text}' == 'a'",
        "score > ",
        "len",
    ],
)
def test_anything_beyond_the_language_is_refused_at_parse_time(condition):
    with pytest.raises(ExpressionError):
        Condition(condition)


def test_a_non_boolean_condition_is_refused_when_evaluated():
    with pytest.raises(ExpressionError, match="not true/false"):
        Condition("n + 1").mask(TABLE)
