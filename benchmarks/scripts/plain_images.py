"""The plain image loop: one process, no Ray, the same model and preprocessing.

Lists the JPEG files (sorted), and for each batch of ``--batch-size`` files: decode with Pillow
(RGB), resize the shorter side to 256, center crop 224, ImageNet mean/std (torch functions, as
in handwritten_images.py), one forward pass, arg-max to label names. Writes one Parquet file
(``path``, ``predicted_label``). Prints one ``BENCH {json}`` line: rows, seconds in the model
(``model_s``) and in decoding + preprocessing (``preprocess_s``), the whole job and the time
its output was written.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

T0 = time.time()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if args.threads:
        torch.set_num_threads(args.threads)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def transform(image: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
        h, w = x.shape[1:]
        short, long = min(h, w), max(h, w)
        size = (256, int(256 * long / short)) if h <= w else (int(256 * long / short), 256)
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
        top, left = int(round((x.shape[1] - 224) / 2.0)), int(round((x.shape[2] - 224) / 2.0))
        return (x[:, top : top + 224, left : left + 224] - mean) / std

    job_start = time.time()
    paths = sorted(str(p) for p in Path(args.input).rglob("*.jpg"))
    model = torch.jit.load(args.model).eval()
    labels = (Path(args.model).parent / "labels.txt").read_text().split()
    predicted: list[str] = []
    model_s = preprocess_s = 0.0
    for start in range(0, len(paths), args.batch_size):
        began = time.perf_counter()
        batch = torch.stack(
            [
                transform(np.asarray(Image.open(p).convert("RGB")))
                for p in paths[start : start + args.batch_size]
            ]
        )
        preprocess_s += time.perf_counter() - began
        began = time.perf_counter()
        with torch.inference_mode():
            classes = model(batch).argmax(dim=1).numpy()
        model_s += time.perf_counter() - began
        predicted += [labels[i] for i in classes]
    os.makedirs(args.output, exist_ok=True)
    table = pa.table({"path": paths, "predicted_label": predicted})
    pq.write_table(table, f"{args.output}/0.parquet")
    done = time.time()
    print(
        "BENCH "
        + json.dumps(
            {
                "rows": len(paths),
                "model_s": model_s,
                "preprocess_s": preprocess_s,
                "job_s": done - job_start,
                "first_row_at": done,
                "threads": torch.get_num_threads(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
