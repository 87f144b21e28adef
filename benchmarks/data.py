"""Deterministic benchmark inputs, generated once into a cache folder outside the repository.

* ``sentences(n)``: ``n`` English-like sentences of 8 to 60 words (uniform), built from the words
  of the sentences shipped with bulkinfer, columns ``id`` and ``text``.
* ``split_files(path, parts)``: a Parquet file's rows as a folder of ``parts`` files (the layout
  and peer benchmarks' inputs).
* ``features(n, d)``: ``n`` rows of ``d`` float32 features ``f0..f{d-1}`` plus an ``id`` column.
* ``xgb_model(d)``: an XGBoost regressor of 20 trees trained on 20,000 rows of that data.
* ``images(n)``: a folder of ``n`` RGB JPEG files, 160-320 pixels a side, in subfolders of 500.
* ``resnet(width)``: a ResNet-18 of first-stage width ``width`` (64 is torchvision's), random
  weights, 10 classes: a TorchScript file and ``labels.txt`` beside it.

Files are keyed by their size and a format version, so a second run reuses them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

VERSION = 1
SEED = 7
ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """``$BULKINFER_BENCH_DATA``, else ``~/.cache/bulkinfer-bench``."""
    where = os.environ.get("BULKINFER_BENCH_DATA") or Path.home() / ".cache" / "bulkinfer-bench"
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _vocabulary() -> list[str]:
    sample = ROOT / "pipeline" / "samples" / "sample_texts.jsonl"
    words: set[str] = set()
    for line in sample.read_text().splitlines():
        words |= set(re.findall(r"[A-Za-z']+", json.loads(line)["text"].lower()))
    return sorted(words)


def _atomic_write(table, path: Path, row_group_rows: int | None = None) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp, row_group_size=row_group_rows)
    os.replace(tmp, path)


def sentences(n: int, min_words: int = 8, max_words: int = 60) -> Path:
    """A Parquet file of ``n`` sentences (``id``, ``text``), one file, written once."""
    import numpy as np
    import pyarrow as pa

    path = cache_dir() / f"sentences-v{VERSION}-{n}-{min_words}-{max_words}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(SEED)
    vocab = np.array(_vocabulary())
    lengths = rng.integers(min_words, max_words + 1, size=n)
    words = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))]
    texts, start = [], 0
    for length in lengths:
        chunk = words[start : start + length]
        start += length
        texts.append(" ".join(chunk).capitalize() + ".")
    _atomic_write(pa.table({"id": np.arange(n, dtype=np.int64), "text": texts}), path)
    return path


def split_files(path: Path, parts: int) -> Path:
    """The rows of the Parquet file ``path`` as a folder of ``parts`` files of consecutive rows
    (``part-00000.parquet``, ...), written once beside it."""
    import pyarrow.parquet as pq

    folder = path.with_name(f"{path.stem}-{parts}-files")
    if folder.exists():
        return folder
    table = pq.read_table(path)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // parts)
    for i in range(parts):
        pq.write_table(table.slice(i * step, step), tmp / f"part-{i:05d}.parquet")
    tmp.rename(folder)
    return folder


def features(n: int, d: int = 30, row_group_rows: int | None = None) -> Path:
    """A Parquet file of ``n`` rows x ``d`` float32 features (``f0``..) and an ``id`` column.

    ``row_group_rows``: rows per Parquet row group (None: pyarrow's default, one group of up to
    1Mi rows). A reader holds at least a row group in memory, so the memory benchmark uses
    groups of the size common writers produce.
    """
    import numpy as np
    import pyarrow as pa

    groups = f"-rg{row_group_rows}" if row_group_rows else ""
    path = cache_dir() / f"features-v{VERSION}-{n}x{d}{groups}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(SEED)
    columns = {"id": np.arange(n, dtype=np.int64)}
    for j in range(d):
        columns[f"f{j}"] = rng.standard_normal(n, dtype=np.float32)
    _atomic_write(pa.table(columns), path, row_group_rows)
    return path


def xgb_model(d: int = 30, trees: int = 20) -> Path:
    """An XGBoost regressor (``trees`` trees, depth 6) saved as JSON, trained once."""
    import numpy as np

    path = cache_dir() / f"xgb-v{VERSION}-{d}f-{trees}t.json"
    if path.exists():
        return path
    import xgboost

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((20_000, d), dtype=np.float32)
    y = x[:, 0] * 2 + np.sin(x[:, 1]) + x[:, 2] * x[:, 3] + rng.normal(0, 0.1, 20_000)
    booster = xgboost.train(
        {"max_depth": 6, "eta": 0.3, "objective": "reg:squarederror", "nthread": 1},
        xgboost.DMatrix(x, label=y, feature_names=[f"f{j}" for j in range(d)]),
        num_boost_round=trees,
    )
    tmp = path.with_suffix(f".tmp{os.getpid()}.json")
    booster.save_model(str(tmp))
    os.replace(tmp, path)
    return path


def images(n: int) -> Path:
    """A folder of ``n`` generated RGB JPEG files (``000/00000.jpg``...), written once."""
    import shutil

    from plugins.samples.images import write_benchmark_images

    path = cache_dir() / f"images-v{VERSION}-{n}"
    if path.exists():
        return path
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_benchmark_images(tmp, n, seed=SEED)
    os.replace(tmp, path)
    return path


def resnet(width: int = 8, classes: int = 10) -> Path:
    """A random-weight ResNet-18 (first stage ``width`` channels) as TorchScript, built once.

    ``labels.txt`` (one class name per line) lies beside the returned ``resnet.pt``.
    """
    import shutil

    from plugins.samples.models import build_torch_resnet

    folder = cache_dir() / f"resnet18-v{VERSION}-w{width}-c{classes}"
    if not folder.exists():
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build_torch_resnet(tmp, num_classes=classes, width=width, seed=SEED)
        os.replace(tmp, folder)
    return folder / "resnet.pt"
