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

from pipeline.contract.batches import length_order

pytestmark = [pytest.mark.ray, pytest.mark.model]  # the benchmark scripts on tiny inputs

ROOT = Path(__file__).resolve().parents[2]
WORDS = "the council measured a quiet river before the long festival of summer trains".split()


def sentences(n: int) -> list[str]:
    rng = np.random.default_rng(3)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in rng.integers(1, 40, size=n)]


def test_the_stage_wrapper_sorts_a_window_by_length_and_restores_the_input_order():
    """A stage that tells its rows' lengths gets model batches of similar lengths, longest
    first, and the caller gets one row per input row, in input order."""
    import pyarrow as pa

    from pipeline.contract.plugin import PluginParams
    from pipeline.contract.stage import Predictor
    from pipeline.execute.stage_call import StageCall

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
    from pipeline.execute.stage_call import StageCall
    from plugins.predictors.sentence_embedding import SentenceEmbedding

    def make(sort: bool, batch: int = 4):
        # torch in float32: the same vectors whatever rows share a batch (bfloat16 and int8,
        # which backend auto may run, round a little differently with the padding)
        params = SentenceEmbedding.Params(backend="torch")
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


def _script(name: str):
    """A benchmark script as a module (benchmarks/scripts/ is a folder of scripts)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_benchmark_scripts_label_every_image_alike(tmp_path):
    """The plain loop and the hand-written Ray Data job's own row transform and model class give
    every generated JPEG the same label. The hand-written job's parts are called here without
    Ray (its Ray plumbing, read_images -> map -> map_batches -> write_parquet, runs in the
    benchmark, which checks the rows it writes): a Ray of its own cost this test 30 s."""
    import torch
    from PIL import Image

    from plugins.samples.images import write_benchmark_images

    class ChannelMeans(torch.nn.Module):
        """Logits that follow the pictures (a random ResNet gives every picture one label):
        each normalised channel's mean, so the label is the most prominent channel."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    source = tmp_path / "images"
    write_benchmark_images(source, 12, per_folder=5)
    (tmp_path / "model").mkdir()
    model = str(tmp_path / "model" / "channels.pt")
    torch.jit.save(torch.jit.trace(ChannelMeans(), torch.zeros(1, 3, 8, 8)), model)
    (tmp_path / "model" / "labels.txt").write_text("red\ngreen\nblue\n")
    _script("plain_images.py").main([str(source), str(tmp_path / "plain"), model, "--batch-size=5"])
    plain = pq.read_table(tmp_path / "plain")
    paths = plain.column("path").to_pylist()
    assert len(paths) == 12

    handwritten = _script("handwritten_images.py")
    rows = [  # what read_images(mode="RGB") hands to ds.map: the file through Pillow's RGB
        handwritten.preprocess_image({"path": p, "image": np.asarray(Image.open(p).convert("RGB"))})
        for p in paths
    ]
    batch = {
        "path": np.array(paths),
        "transformed_image": np.stack([r["transformed_image"] for r in rows]),
    }
    predicted = handwritten.ResnetModel(model)(batch)
    labels = plain.column("predicted_label").to_pylist()
    assert len(set(labels)) > 1  # else the comparison proves little
    assert list(predicted["predicted_label"]) == labels
