"""Rows per plugin call decided at run time: out-of-memory halving and ``batch_size: auto``.

The unit tests drive :class:`AdaptiveBatches` with a real exception type (torch's CUDA
out-of-memory error, which the CPU build constructs too) and a cost model on a fake clock, so the
probe's decision is exact and no test depends on this machine's speed. The end-to-end tests run
the same logic inside Ray actors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.contract.batches import batch_rows, concat_batches, slice_batch
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import AUTO_MAX_ROWS
from pipeline.contract.stage import Predictor
from pipeline.execute.batching import AdaptiveBatches, is_out_of_memory


def cuda_oom() -> BaseException:
    torch = pytest.importorskip("torch")
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class OomAbove:
    """A stand-in model: runs out of (GPU) memory on calls of more than ``fits`` rows."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[int] = []

    def __call__(self, batch: dict) -> dict:
        rows = batch_rows(batch)
        if rows > self.fits:
            raise cuda_oom()
        self.calls.append(rows)
        return {"id": batch["id"], "double": batch["id"] * 2}


def ids(n: int) -> dict:
    return {"id": np.arange(n)}


def test_torch_cuda_out_of_memory_is_recognised_but_other_errors_are_not():
    assert is_out_of_memory(cuda_oom())
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(ValueError("bad value"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.model  # frees memory after each out-of-memory error: seconds
def test_a_batch_that_runs_out_of_memory_is_split_in_halves_and_every_row_comes_back_in_order():
    model, said = OomAbove(fits=10), []
    out = AdaptiveBatches("predictor", report=said.append)(model, ids(100))
    assert out["id"].tolist() == list(range(100))
    assert out["double"].tolist() == [2 * i for i in range(100)]
    assert max(model.calls) <= 10 and sum(model.calls) == 100
    assert said == [
        "predictor: a batch of 100 rows ran out of memory (OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB); continuing with batches of at most 50 rows",
        "predictor: a batch of 50 rows ran out of memory (OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB); continuing with batches of at most 25 rows",
        "predictor: a batch of 25 rows ran out of memory (OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB); continuing with batches of at most 12 rows",
        "predictor: a batch of 12 rows ran out of memory (OutOfMemoryError: CUDA out of memory. "
        "Tried to allocate 2.00 GiB); continuing with batches of at most 6 rows",
    ]


@pytest.mark.model  # frees memory after each out-of-memory error: seconds
def test_after_halving_later_batches_are_cut_to_the_size_that_fitted_without_failing_again():
    model = OomAbove(fits=10)
    batches = AdaptiveBatches("predictor")
    batches(model, ids(100))
    model.calls.clear()
    out = batches(model, ids(64))
    assert out["id"].tolist() == list(range(64))
    assert model.calls == [6] * 10 + [4]  # pre-cut: no call above the limit, no new OOM


def test_a_whole_block_is_cut_into_calls_of_the_stage_batch_size():
    """Task stages get whole blocks from Ray (so they fuse with the read) and cut them here."""
    model = OomAbove(fits=1000)
    out = AdaptiveBatches("predictor", limit=4)(model, ids(10))
    assert model.calls == [4, 4, 2]
    assert out["double"].tolist() == [2 * i for i in range(10)]


def test_a_single_row_that_does_not_fit_fails_with_the_models_own_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        AdaptiveBatches("predictor")(OomAbove(fits=0), ids(4))


def test_errors_other_than_out_of_memory_are_not_retried():
    calls = []

    def broken(batch):
        calls.append(batch_rows(batch))
        raise ValueError("column 'text' has null values")

    with pytest.raises(ValueError, match="null values"):
        AdaptiveBatches("predictor")(broken, ids(8))
    assert calls == [8]


class FakeClock:
    """Time that passes only when the stand-in model says its call took that long."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def costed_model(clock: FakeClock, seconds_for_rows, fits: int | None = None):
    calls: list[int] = []

    def model(batch):
        rows = batch_rows(batch)
        if fits is not None and rows > fits:
            raise cuda_oom()
        calls.append(rows)
        clock.now += seconds_for_rows(rows)
        return batch

    model.calls = calls
    return model


def test_auto_keeps_doubling_while_throughput_rises_and_settles_where_it_stops():
    clock, said = FakeClock(), []
    # 50 ms per call + 1 ms per row up to 256 rows; beyond that every row costs 3 ms.
    model = costed_model(clock, lambda n: 0.05 + 0.001 * n + 0.002 * max(0, n - 256))
    batches = AdaptiveBatches("predictor", auto=True, report=said.append, clock=clock)
    out = batches(model, ids(AUTO_MAX_ROWS))
    assert out["id"].tolist() == list(range(AUTO_MAX_ROWS))
    assert batches.limit == 256 and not batches.probing
    assert model.calls[:7] == [16, 16, 32, 64, 128, 256, 512]  # warm-up, then doubling
    assert said[0].startswith("predictor: batch_size auto -> 256 rows (throughput stopped rising")
    model.calls.clear()
    batches(model, ids(1000))
    assert model.calls == [256, 256, 256, 232]


def test_auto_looks_past_a_plateau_before_a_rise():
    clock = FakeClock()
    # Flat up to 64 rows per call, then much faster (e.g. a bigger call lets rows be sorted).
    model = costed_model(clock, lambda n: n * (0.01 if n <= 64 else 0.005))
    batches = AdaptiveBatches("predictor", auto=True, clock=clock)
    batches(model, ids(AUTO_MAX_ROWS))
    assert batches.limit == 128


def test_auto_on_a_gpu_stops_below_the_size_that_ran_out_of_memory():
    clock, said = FakeClock(), []
    model = costed_model(clock, lambda n: 0.1 + 0.0001 * n, fits=200)  # faster the bigger
    batches = AdaptiveBatches("predictor", auto=True, report=said.append, clock=clock)
    out = batches(model, ids(2048))
    assert out["id"].tolist() == list(range(2048))
    assert batches.limit == 128 and max(model.calls) <= 200
    assert "batch_size auto -> 128 rows (out of memory above 128 rows" in said[-1]


def test_auto_keeps_peak_memory_under_the_stage_memory_limit():
    clock, said, mib = FakeClock(), [], 1 << 20
    peak = {"bytes": 300 * mib}  # the model's weights

    def model(batch):  # 1 MiB of activations per row; faster the bigger the call
        peak["bytes"] = max(peak["bytes"], 300 * mib + batch_rows(batch) * mib)
        clock.now += 0.1 + 0.0001 * batch_rows(batch)
        return batch

    batches = AdaptiveBatches(
        "predictor",
        auto=True,
        memory_limit=400 * mib,
        report=said.append,
        clock=clock,
        peak_memory=lambda: peak["bytes"],
    )
    out = batches(model, ids(1024))
    assert batch_rows(out) == 1024
    assert batches.limit == 64  # 128 rows would take 428 MiB
    assert "128 rows took peak memory to 428 MiB (+64 MiB), over the limit of 400 MiB" in said[0]


@pytest.mark.parametrize(
    "batch",
    [
        {"id": np.arange(10), "text": np.array([f"t{i}" for i in range(10)], dtype=object)},
        pd.DataFrame({"id": range(10), "text": [f"t{i}" for i in range(10)]}),
        pa.table({"id": list(range(10)), "text": [f"t{i}" for i in range(10)]}),
    ],
    ids=["numpy", "pandas", "pyarrow"],
)
def test_cut_and_joined_batches_of_every_format_keep_their_rows_in_order(batch):
    parts = [slice_batch(batch, 0, 3), slice_batch(batch, 3, 7), slice_batch(batch, 7, 10)]
    joined = concat_batches(parts)
    assert type(joined) is type(batch) and batch_rows(joined) == 10
    as_ids = joined["id"] if not isinstance(joined, pa.Table) else joined.column("id")
    assert list(as_ids) == list(range(10)) or as_ids.to_pylist() == list(range(10))


# -- inside Ray: the same logic in the actors that run a stage ----------------------------------


class OomAboveEight(Predictor):
    """Doubles ``id``; runs out of (GPU) memory on calls of more than 8 rows."""

    class Params(PluginParams):
        pass

    def __call__(self, batch):
        if batch_rows(batch) > 8:
            raise cuda_oom()
        return {
            "id": batch["id"],
            "double": batch["id"] * 2,
            "call_rows": [len(batch["id"])] * len(batch["id"]),
        }


def run_stage(ray, plugin, rows: int, batch_size, **call):
    """``rows`` ids through one actor running ``plugin`` in a StageCall; its rows and notes."""
    import sys

    from pipeline.execute.guard import named_like
    from pipeline.execute.ledger import Ledger
    from pipeline.execute.stage_call import StageCall

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    ledger = ray.remote(num_cpus=0)(Ledger).remote({})
    ds = ray.data.range(rows, override_num_blocks=2).map_batches(
        named_like(StageCall, plugin),
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=batch_size,
        num_cpus=0.5,
        fn_constructor_kwargs=dict(
            plugin=plugin,
            params=plugin.Params(),
            key="predictor",
            ledger=ledger,
            eager=True,
            **call,
        ),
    )
    out = sorted(ds.take_all(), key=lambda r: r["id"])
    return out, ray.get(ledger.notes.remote())


def test_a_stage_whose_model_runs_out_of_memory_finishes_the_job_and_reports_the_size(ray_session):
    out, notes = run_stage(ray_session, OomAboveEight, rows=100, batch_size=32)
    assert [r["id"] for r in out] == list(range(100))
    assert all(r["double"] == 2 * r["id"] for r in out)
    assert max(r["call_rows"] for r in out) <= 8
    assert any("continuing with batches of at most 8 rows" in n for n in notes)
