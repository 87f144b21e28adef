"""The sentence_embedding predictor on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from contracts import PredictorContract, is_vector, run_job

from plugins.predictors.sentence_embedding import SentenceEmbedding, SentenceEmbeddingParams

SENTENCES = [
    {"id": i, "text": t}
    for i, t in enumerate(
        ["A cat sits on the mat.", "Stocks fell sharply today.", "The cat is on the rug.", "Hi"]
    )
]


class TestSentenceEmbeddingContract(PredictorContract):
    predictor = "sentence_embedding"
    rows = SENTENCES
    output_types = {"embedding": lambda kind: is_vector(kind, 384)}

    @pytest.fixture(scope="class")
    def params(self):
        return {"normalize": True}


@pytest.fixture(scope="module")
def minilm():
    return SentenceEmbedding(SentenceEmbeddingParams())


def _vectors(table: pa.Table, column: str = "embedding") -> np.ndarray:
    return np.stack(table.column(column).to_numpy(zero_copy_only=False))


def test_normalize_gives_unit_vectors_and_float16_is_stored_as_float16(minilm):
    texts = pa.table({"text": [s["text"] for s in SENTENCES]})
    minilm.params = SentenceEmbeddingParams(normalize=True, dtype="float16")
    out = minilm(texts)
    assert out.schema.field("embedding").type.value_type == pa.float16()
    np.testing.assert_allclose(
        np.linalg.norm(_vectors(out).astype(np.float32), axis=1), 1, atol=1e-2
    )


def test_similar_sentences_are_closer_than_unrelated_ones(minilm):
    minilm.params = SentenceEmbeddingParams(normalize=True)
    v = _vectors(minilm(pa.table({"text": [s["text"] for s in SENTENCES[:3]]})))
    assert v[0] @ v[2] > v[0] @ v[1]


def test_max_seq_length_truncates_long_inputs():
    short = SentenceEmbedding(SentenceEmbeddingParams(max_seq_length=4))
    assert short.model.max_seq_length == 4
    long_text = "one two three four five six seven eight nine ten"
    a = _vectors(short(pa.table({"text": [long_text]})))
    b = _vectors(short(pa.table({"text": ["one two three four five six"]})))
    np.testing.assert_allclose(a, b, atol=1e-5)  # both cut to the same first tokens


def test_tokenize_stage_then_embedding_equals_embedding_the_text(ray_session, tmp_path):
    rows = [dict(s) for s in SENTENCES]
    tokenize = {"type": "tokenize", "params": {"max_length": 64}}
    via_ids = run_job(
        {"type": "sentence_embedding", "params": {"input_column": "input_ids"}},
        rows,
        tmp_path / "ids",
        preprocessors=[tokenize],
    )
    via_text = run_job({"type": "sentence_embedding", "params": {}}, rows, tmp_path / "text")
    order = np.argsort(via_ids.column("id").to_numpy())
    expected = np.argsort(via_text.column("id").to_numpy())
    assert "input_ids" in via_ids.column_names and "attention_mask" in via_ids.column_names
    np.testing.assert_allclose(
        _vectors(via_ids)[order], _vectors(via_text)[expected], rtol=1e-4, atol=1e-5
    )


def test_an_input_of_known_size_gets_a_sorted_window_for_each_actor(ray_session, tmp_path):
    """200 inline rows, two actors, model batches of 16: two windows of 112 and 88 rows (whole
    model batches), one for each actor, not one 4,096-row window that one actor embeds alone.
    Each window is a block, written as a file of its own."""
    import pyarrow.parquet as pq

    rows = [{"id": i, "text": "word " * (1 + i % 23)} for i in range(200)]
    stage = {"concurrency": 2, "batch_size": 16}
    out = tmp_path / "out"
    table = run_job({"type": "sentence_embedding", "params": {}, "stage": stage}, rows, out)
    assert sorted(pq.read_metadata(f).num_rows for f in out.glob("*.parquet")) == [88, 112]
    assert sorted(table.column("id").to_pylist()) == list(range(200))
