"""The error family: a plugin's own error kind crosses processes and gets its absolute key
without bulkinfer calling a constructor it does not own."""

from __future__ import annotations

import pickle

import pytest

from pipeline.contract.errors import BulkInferError, ColumnNotFoundError, DataError


class RowsRefused(DataError):
    """A plugin's error kind whose constructor takes other arguments than bulkinfer's."""

    constructed = 0

    def __init__(self, *, rows: int, key: str | None = None) -> None:
        type(self).constructed += 1
        super().__init__(f"{rows} rows refused", key=key)


def test_a_plugins_error_kind_is_made_again_without_calling_its_constructor():
    error = RowsRefused(rows=3, key="params.limit")
    before = RowsRefused.constructed
    for made in (
        pickle.loads(pickle.dumps(error)),
        error.within("predictor"),
        error.rebuilt("other words"),
    ):
        assert type(made) is RowsRefused
        assert isinstance(made, DataError)
        assert made.exit_code == 2
    assert RowsRefused.constructed == before
    within = error.within("predictor")
    assert (within.key, within.message) == ("predictor.params.limit", "3 rows refused")
    assert str(within) == "predictor.params.limit: 3 rows refused"
    assert error.rebuilt("other words").message == "other words"
    assert error.key == "params.limit"  # the original is left as it was


@pytest.mark.parametrize("kind", [DataError, ColumnNotFoundError, BulkInferError])
def test_bulkinfers_own_kinds_are_rebuilt_as_themselves(kind):
    error = kind("no such column", key="params.column")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is kind
    assert (again.key, again.message, str(again)) == (
        "params.column",
        "no such column",
        "params.column: no such column",
    )
    assert type(error.within("sink")) is kind
    assert error.within("sink").key == "sink.params.column"


def test_a_ray_task_error_of_a_plugins_kind_is_rebuilt_as_the_plugins_kind():
    from ray.exceptions import RayTaskError

    cause = RowsRefused(rows=2, key="params.limit")
    try:
        raise cause
    except RowsRefused as raised:
        wrapped = RayTaskError("fn", "Traceback ...", raised).as_instanceof_cause()
    assert isinstance(wrapped, RowsRefused) and type(wrapped) is not RowsRefused
    before = RowsRefused.constructed
    fresh = wrapped.rebuilt()
    assert type(fresh) is RowsRefused
    assert (fresh.key, fresh.message) == ("params.limit", "2 rows refused")
    assert fresh.__traceback__ is None
    assert RowsRefused.constructed == before
