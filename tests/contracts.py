"""Contract suites every predictor's tests subclass: the same promises, checked the same way.

A subclass names the plugin, its params (a fixture, since they often point at a model the test
built), the input rows and the documented type of each output column. The suite runs one real
job per class (items source -> the predictor -> Parquet sink on the module's local Ray) and
checks what every predictor promises: the row count is kept, the input columns come out
unchanged, each output column has its documented type, and a missing input column is refused
with its config key before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ColumnNotFoundError


def run_job(
    predictor: dict[str, Any],
    rows: list[dict[str, Any]],
    out: Path,
    preprocessors: list[dict[str, Any]] | None = None,
):
    """Run ``items -> [preprocessors] -> predictor -> parquet`` on the connected Ray."""
    from pipeline.runner import run_job

    config = {
        "source": {"type": "items", "params": {"items": rows}},
        "preprocessors": preprocessors or [],
        "predictor": predictor,
        "sink": {"type": "parquet", "params": {"path": str(out)}},
        "run": {"progress": False},
    }
    run_job(config)
    return pq.read_table(out)


class PredictorContract:
    """Subclass with ``predictor``, ``output_types``, ``rows`` and a ``params`` fixture."""

    #: The predictor's entry-point name.
    predictor: ClassVar[str]
    #: Output column -> a check of its Arrow type, as the plugin documents it.
    output_types: ClassVar[dict[str, Callable[[pa.DataType], bool]]]
    #: Input rows; each has a unique "id".
    rows: ClassVar[list[dict[str, Any]]]
    #: The column the params read, dropped to test the missing-column error.
    input_column: ClassVar[str] = "text"
    #: Stage overrides for the job.
    stage: ClassVar[dict[str, Any]] = {"concurrency": 1}

    @pytest.fixture(scope="class")
    def params(self) -> dict[str, Any]:
        raise NotImplementedError("subclasses define the params fixture")

    @pytest.fixture(scope="class")
    def output(self, ray_session, params, tmp_path_factory) -> pa.Table:
        out = tmp_path_factory.mktemp("contract") / "out"
        job = {"type": self.predictor, "params": params, "stage": self.stage}
        return run_job(job, self.rows, out)

    def test_keeps_the_row_count(self, output):
        assert output.num_rows == len(self.rows)

    def test_keeps_the_input_columns_unchanged(self, output):
        by_id = {row["id"]: row for row in output.to_pylist()}
        assert sorted(by_id) == sorted(row["id"] for row in self.rows)
        for row in self.rows:
            for column, value in row.items():
                assert by_id[row["id"]][column] == value, column

    def test_output_columns_have_the_documented_types(self, output):
        for column, is_documented in self.output_types.items():
            assert column in output.column_names
            kind = output.schema.field(column).type
            assert is_documented(kind), f"{column}: {kind}"
            assert output.column(column).null_count == 0

    def test_missing_input_column_is_refused_with_its_key(self, ray_session, params, tmp_path):
        rows = [
            {k: v for k, v in row.items() if k != self.input_column} | {"other": 1}
            for row in self.rows
        ]
        job = {"type": self.predictor, "params": params, "stage": self.stage}
        with pytest.raises(ColumnNotFoundError) as error:
            run_job(job, rows, tmp_path / "out")
        assert error.value.key.startswith("predictor.params.")
        assert repr(self.input_column) in error.value.message
        assert not (tmp_path / "out").exists()


def is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def is_float(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind)


def is_vector(kind: pa.DataType, size: int | None = None, element=pa.types.is_float32) -> bool:
    """A fixed-size list of floats (``size`` elements when given)."""
    return (
        pa.types.is_fixed_size_list(kind)
        and element(kind.value_type)
        and (size is None or kind.list_size == size)
    )
