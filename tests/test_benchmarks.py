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

from plugins.length_sort import length_order, map_length_sorted

pytestmark = pytest.mark.ray  # every test here starts Ray or a job that does

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the council measured a quiet river before the long festival of summer trains".split()


def sentences(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.integers(1, 40, size=n)]


def test_length_sorted_batching_returns_one_result_per_item_in_input_order():
    items = [f"item{i}" for i in range(23)]
    lengths = [(i * 7) % 11 for i in range(23)]
    chunks: list[list[str]] = []

    def fn(chunk):
        chunks.append(chunk)
        return [f"out({x})" for x in chunk]

    result = map_length_sorted(items, lengths, fn, batch_size=4)
    assert result.tolist() == [f"out({x})" for x in items]
    assert [len(c) for c in chunks] == [4, 4, 4, 4, 4, 3]
    seen = [lengths[items.index(x)] for chunk in chunks for x in chunk]
    assert seen == sorted(lengths, reverse=True)  # each forward pass holds similar lengths


def test_equal_lengths_keep_their_input_order():
    assert length_order([3, 5, 3, 5, 1]).tolist() == [1, 3, 0, 2, 4]


@pytest.fixture(scope="module")
def embedder():
    from plugins.predictors.sentence_embedding import SentenceEmbedding

    def make(**params):
        return SentenceEmbedding(SentenceEmbedding.Params(encode_batch_size=4, **params))

    return make


def test_length_sorted_embeddings_equal_unsorted_ones_row_for_row(embedder):
    texts = sentences(26)
    sorted_ = embedder(sort_by_length=True).embed(texts)
    unsorted = embedder(sort_by_length=False).embed(texts)
    alone = np.concatenate([embedder(sort_by_length=False).embed([t]) for t in texts[:5]])
    assert sorted_.shape == unsorted.shape == (26, 384)
    np.testing.assert_allclose(sorted_, unsorted, atol=1e-5)
    np.testing.assert_allclose(sorted_[:5], alone, atol=1e-5)  # row i is text i's vector


def test_the_predictor_keeps_every_row_in_place_when_it_sorts(embedder):
    import pyarrow as pa

    texts = sentences(9)
    table = pa.table({"id": list(range(9)), "text": texts})
    out = embedder(sort_by_length=True)(table)
    assert out.column("id").to_pylist() == list(range(9))
    assert out.column("text").to_pylist() == texts
    expected = embedder(sort_by_length=False).embed(texts)
    np.testing.assert_allclose(np.array(out.column("embedding").to_pylist()), expected, atol=1e-5)


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
