"""The benchmark code runs on a tiny input; length-sorted batching changes nothing but speed.

No timed assertions: the benchmarks print figures, these tests only check they run and that the
speed-up (forward passes of length-sorted sentences) returns exactly what unsorted batching does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.batching import length_order

pytestmark = pytest.mark.ray  # every test here starts Ray or a job that does

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the council measured a quiet river before the long festival of summer trains".split()


def sentences(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.integers(1, 40, size=n)]


def test_the_stage_wrapper_sorts_a_window_by_length_and_restores_the_input_order():
    """A stage that tells its rows' lengths gets model batches of similar lengths, longest
    first, and the caller gets one row per input row, in input order."""
    import pyarrow as pa

    from pipeline.interfaces import PluginParams, Predictor
    from pipeline.stage_call import StageCall

    calls: list[list[int]] = []

    class Lengthy(Predictor):
        Params = PluginParams

        def row_lengths(self, batch):
            return batch.column("n").to_pylist()

        def __call__(self, batch):
            calls.append(batch.column("n").to_pylist())
            return batch.append_column("twice", pa.array([2 * n for n in calls[-1]]))

    lengths = [(i * 7) % 11 for i in range(23)]
    call = StageCall(Lengthy, PluginParams(), "predictor", None, batch_limit=4, sort_by_length=True)
    out = call(pa.table({"id": list(range(23)), "n": lengths}))
    assert out.column("id").to_pylist() == list(range(23))
    assert out.column("twice").to_pylist() == [2 * n for n in lengths]
    assert [len(c) for c in calls] == [4, 4, 4, 4, 4, 3]
    assert [n for c in calls for n in c] == sorted(lengths, reverse=True)


def test_equal_lengths_keep_their_input_order():
    assert length_order([3, 5, 3, 5, 1]).tolist() == [1, 3, 0, 2, 4]


@pytest.fixture(scope="module")
def embedder():
    from pipeline.stage_call import StageCall
    from plugins.predictors.sentence_embedding import SentenceEmbedding

    def make(sort: bool, batch: int = 4):
        params = SentenceEmbedding.Params()
        return StageCall(
            SentenceEmbedding, params, "predictor", None, batch_limit=batch, sort_by_length=sort
        )

    return make


def test_length_sorted_embeddings_equal_unsorted_ones_row_for_row(embedder):
    import pyarrow as pa

    texts = sentences(26)
    table = pa.table({"id": list(range(26)), "text": texts})

    def vectors(out):
        return np.array(out.column("embedding").to_pylist())

    sorted_ = embedder(sort=True)(table)
    unsorted = embedder(sort=False)(table)
    alone = np.concatenate([vectors(embedder(sort=False)(table.slice(i, 1))) for i in range(5)])
    assert sorted_.column("id").to_pylist() == list(range(26))
    assert sorted_.column("text").to_pylist() == texts
    assert vectors(sorted_).shape == (26, 384)
    np.testing.assert_allclose(vectors(sorted_), vectors(unsorted), atol=1e-5)
    np.testing.assert_allclose(vectors(sorted_)[:5], alone, atol=1e-5)  # row i is text i's


def test_the_benchmark_suite_runs_end_to_end_on_a_tiny_input(tmp_path):
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--tiny",
            "--workloads",
            "startup,xgboost",
            "--write",
            "--results",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BULKINFER_BENCH_DATA": str(tmp_path / "data")},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = results.read_text()
    for variant in ("bulkinfer", "Ray Data, bare", "plain Python", "Ray Data, seed style"):
        assert f"| {variant} | 1/1 |" in text
    assert "| plain pandas | 1/1 |" in text and "CPUs (" in text


def test_the_plain_embedding_loop_writes_every_sentence(tmp_path):
    import pyarrow as pa

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(12)), "text": sentences(12)}), source)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "scripts" / "plain_embeddings.py"),
            str(source),
            str(tmp_path / "out"),
            "--batch-size=4",
            "--sorted",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BENCH " in done.stdout
    table = pq.read_table(tmp_path / "out")
    assert table.column("id").to_pylist() == list(range(12)) and table.num_rows == 12
