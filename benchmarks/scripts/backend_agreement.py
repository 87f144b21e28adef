"""How close each embedding backend's vectors are to torch's, on the shipped samples.

    python benchmarks/scripts/backend_agreement.py [--cache DIR] [--json FILE]

Embeds ``pipeline/samples/sample_texts.jsonl`` (300 sentences) with the sentence_embedding
predictor on backend torch, then on every other backend whose runtime imports (onnx, onnx with
int8 quantisation, openvino, openvino in bfloat16), in one batch of 300 (int8 scales activations
per batch, so its vectors depend a little on the batch), and prints the cosine similarity of each
sentence's vector to its
torch vector: min, mean and max over the sentences, and the largest absolute difference of an
element.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VARIANTS = ["onnx", "onnx int8", "openvino", "openvino bf16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="export cache (default: the user's)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()

    import numpy as np
    import pyarrow as pa

    from pipeline.contract.errors import ConfigError
    from plugins import st_backends
    from plugins.predictors.sentence_embedding import SentenceEmbedding

    samples = ROOT / "pipeline" / "samples" / "sample_texts.jsonl"
    texts = [json.loads(line)["text"] for line in samples.read_text().splitlines() if line]
    table = pa.table({"text": texts})

    def vectors(**params) -> np.ndarray:
        model = SentenceEmbedding(SentenceEmbedding.Params(backend_cache=args.cache, **params))
        out = model(table).column("embedding").to_numpy(zero_copy_only=False)
        return np.stack(out).astype(np.float64)

    reference = vectors(backend="torch")
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    rows = []
    for name in VARIANTS:
        backend, quantize, model_dtype = st_backends.parse_candidate(name)
        try:
            got = vectors(backend=backend, quantize=quantize, model_dtype=model_dtype)
        except ConfigError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        cos = (got / np.linalg.norm(got, axis=1, keepdims=True) * unit).sum(axis=1)
        rows.append(
            {
                "variant": name,
                "sentences": len(texts),
                "cos_min": float(cos.min()),
                "cos_mean": float(cos.mean()),
                "cos_max": float(cos.max()),
                "max_abs_diff": float(np.abs(got - reference).max()),
            }
        )
    print("| variant | sentences | cosine min | cosine mean | cosine max | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['sentences']} | {r['cos_min']:.6f} | {r['cos_mean']:.6f} | "
            f"{r['cos_max']:.6f} | {r['max_abs_diff']:.2e} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
