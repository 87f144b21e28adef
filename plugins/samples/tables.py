"""Tables for examples: the shipped sentences as a file, and tabular features with small models.

    bulkinfer-samples texts reviews.parquet           # the 300 shipped sentences: id, text
    bulkinfer-samples tiny-xgboost models/xgboost     # breast-cancer features + an XGBoost booster
    bulkinfer-samples tiny-mlp models/mlp             # x, y, z features + a torch.export MLP

Nothing is downloaded: the sentences are bulkinfer's package data, the breast-cancer data is
scikit-learn's bundled copy (the seed's XGBoost example), the MLP's features are drawn from a
seeded generator.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

#: The sentences of the default job (package data of bulkinfer).
SAMPLE_TEXTS = files("pipeline") / "samples" / "sample_texts.jsonl"
#: File suffix -> the writer's name, for :func:`write_texts`.
TEXT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}


def sample_rows(rows: int | None = None) -> list[dict]:
    """The shipped sentences as ``{"id": int, "text": str}`` rows, the first ``rows`` of them
    (all 300 when None; more than 300 repeat them with new ids)."""
    lines = [json.loads(x) for x in SAMPLE_TEXTS.read_text().splitlines() if x.strip()]
    count = len(lines) if rows is None else rows
    return [{"id": i, "text": lines[i % len(lines)]["text"]} for i in range(count)]


def write_texts(path: str | Path, rows: int | None = None) -> Path:
    """Write :func:`sample_rows` to ``path`` as Parquet, CSV or JSON lines (by its suffix:
    ``.parquet``, ``.csv``, ``.jsonl``/``.json``). Raises ValueError for another suffix."""
    import pyarrow as pa

    path = Path(path)
    kind = TEXT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix; use one of " + ", ".join(TEXT_FORMATS)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(sample_rows(rows))
    if kind == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif kind == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


def build_xgboost(folder: str | Path, rounds: int = 20, seed: int = 0) -> dict[str, Path]:
    """scikit-learn's breast-cancer data and an XGBoost booster trained on it, in ``folder``.

    Writes ``features.parquet`` (the 569 rows' 30 float64 features, named as the booster's
    features, without ``target``), ``labels.parquet`` (``target``: 1 benign, 0 malignant) and
    ``model.json`` (``binary:logistic``, ``rounds`` boosting rounds, one thread: about a second).
    Returns the paths by the keys ``features``, ``labels``, ``model``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost
    from sklearn.datasets import load_breast_cancer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = load_breast_cancer(as_frame=True)
    features = data.data
    features.columns = [c.replace(" ", "_") for c in features.columns]
    booster = xgboost.train(
        {"objective": "binary:logistic", "nthread": 1, "seed": seed, "tree_method": "hist"},
        xgboost.DMatrix(features, label=data.target),
        num_boost_round=rounds,
    )
    paths = {
        "features": folder / "features.parquet",
        "labels": folder / "labels.parquet",
        "model": folder / "model.json",
    }
    pq.write_table(pa.Table.from_pandas(features, preserve_index=False), paths["features"])
    pq.write_table(pa.table({"target": data.target.to_numpy()}), paths["labels"])
    booster.save_model(paths["model"])
    return paths


def build_mlp(folder: str | Path, rows: int = 1000, seed: int = 0) -> dict[str, Path]:
    """A small MLP saved as a ``torch.export`` program, and rows to run it on, in ``folder``.

    Writes ``model.pt2`` (the registered module ``mlp``: 3 inputs, 16 hidden, 1 output, random
    weights; input ``[rows, 3]`` float32, output ``[rows, 1]``) and ``features.parquet``
    (``rows`` rows of float32 columns ``x``, ``y``, ``z``). Returns the paths by the keys
    ``model``, ``features``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from plugins.predictors.torch_modules import MLP

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = MLP(in_features=3, out_features=1, hidden=[16]).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.zeros(2, 3),), dynamic_shapes=({0: batch},))
    paths = {"model": folder / "model.pt2", "features": folder / "features.parquet"}
    torch.export.save(program, paths["model"])
    values = np.random.default_rng(seed).normal(size=(rows, 3)).astype(np.float32)
    table = pa.table({name: values[:, i] for i, name in enumerate("xyz")})
    pq.write_table(table, paths["features"])
    return paths
