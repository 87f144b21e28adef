"""The hand-written Ray Data image job, in the style of Ray's ResNet batch-inference example.

As the example ("Image Classification Batch Inference with PyTorch") does: ``read_images`` with
``mode="RGB"``; ``ds.map`` preprocesses row by row (``ToTensor`` then the weights' transforms:
resize the shorter side to 256, center crop 224, ImageNet mean/std); a predictor class loads
the model once per actor in ``__init__`` and maps the arg-max to label names;
``map_batches(..., concurrency=2)``; ``write_parquet``. Two departures: torchvision cannot be
installed beside this project's CPU torch, so the four transforms are written with torch's
own functions (what torchvision's tensor path calls); and each actor asks for ``num_cpus=0.5``
(on a 2-CPU machine two 1-CPU actors would leave the reader no CPU, as in the other seed-style
scripts). The output keeps ``path`` and the label, not the decoded image. Prints one
``BENCH {json}`` line.

    python benchmarks/scripts/handwritten_images.py IMAGES OUTPUT MODEL.pt BATCH_SIZE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def transform(image: np.ndarray) -> torch.Tensor:
    """ToTensor, Resize(256), CenterCrop(224), Normalize: [h, w, 3] uint8 -> [3, 224, 224]."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)  # ToTensor
    h, w = x.shape[1:]
    short, long = min(h, w), max(h, w)
    size = (256, int(256 * long / short)) if h <= w else (int(256 * long / short), 256)
    x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = int(round((x.shape[1] - 224) / 2.0)), int(round((x.shape[2] - 224) / 2.0))
    x = x[:, top : top + 224, left : left + 224]
    return (x - MEAN) / STD


def preprocess_image(row: dict[str, Any]) -> dict[str, Any]:
    return {"path": row["path"], "transformed_image": transform(row["image"]).numpy()}


class ResnetModel:
    def __init__(self, model_path: str):
        self.model = torch.jit.load(model_path).eval()
        self.labels = (Path(model_path).parent / "labels.txt").read_text().split()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        torch_batch = torch.from_numpy(batch["transformed_image"])
        with torch.inference_mode():
            prediction = self.model(torch_batch)
            predicted_classes = prediction.argmax(dim=1).numpy()
        return {
            "path": batch["path"],
            "predicted_label": [self.labels[i] for i in predicted_classes],
        }


def main(argv: list[str] | None = None) -> None:
    source, output, model_path, batch_size = (sys.argv[1:] if argv is None else argv)[:4]
    if not ray.is_initialized():  # the tests run it on their own local Ray
        ray.init()
    job_start = time.time()
    ds = ray.data.read_images(source, mode="RGB", include_paths=True)
    transformed_ds = ds.map(preprocess_image)
    predictions = transformed_ds.map_batches(
        ResnetModel,
        fn_constructor_kwargs={"model_path": model_path},
        concurrency=2,
        batch_size=int(batch_size),
        num_cpus=0.5,
    )
    predictions.write_parquet(output)
    print("BENCH " + json.dumps({"job_s": time.time() - job_start}), flush=True)


if __name__ == "__main__":
    main()
