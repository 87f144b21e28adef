"""Classification outputs shared by the model plugins: logits -> scores -> best labels -> Arrow.

``image_classification`` (a transformers model) and ``torch_module`` with a labels file (e.g. a
torchvision-style ResNet) both turn ``[rows, classes]`` logits into a label and its score per
row, or the ``top_k`` best of each, the way transformers' classification pipelines do:
softmax or sigmoid in float32, a stable descending sort (ties keep the lower class index first).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pipeline.contract.errors import DataError

#: How logits become scores: ``softmax`` over the classes, ``sigmoid`` per class, or ``none``.
ScoreFunction = Literal["softmax", "sigmoid", "none"]


def scores_of(logits: Any, function: str):
    """``[n, classes]`` float logits -> float32 scores by ``function`` (computed in float32, as
    the transformers pipelines do after converting half-precision logits)."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float32)
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-values))
    if function == "softmax":
        shifted = np.exp(values - values.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return values


def top_labels(scores: Any, id2label: dict[int, str] | list[str], top_k: int = 1):
    """The ``top_k`` best labels per row, best first: ``(labels, scores)``, each ``[n, k]``.

    ``k = min(top_k, classes)``, as in the pipelines. Ties keep the lower class index first (a
    stable sort). ``id2label`` maps class index -> name (a list works too); ``labels`` is an
    object array of str, ``scores`` float32.
    """
    import numpy as np

    scores = np.asarray(scores, dtype=np.float32)
    k = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = np.array([id2label[i] for i in range(scores.shape[1])], dtype=object)
    return names[order], np.take_along_axis(scores, order, axis=1)


def label_types(top_k: int) -> tuple[Any, Any]:
    """Arrow types of the label and score columns: ``string`` and ``float32``, or with
    ``top_k > 1`` ``list<string>`` and ``list<float32>``."""
    import pyarrow as pa

    if top_k == 1:
        return pa.string(), pa.float32()
    return pa.list_(pa.string()), pa.list_(pa.float32())


def label_arrays(labels: Any, scores: Any, top_k: int):
    """``(labels, scores)`` of :func:`top_labels` as Arrow arrays of :func:`label_types`.

    ``top_k == 1``: one label and its score per row. ``top_k > 1``: lists, best first
    (``k = min(top_k, classes)`` entries per row).
    """
    import numpy as np
    import pyarrow as pa

    scores = np.asarray(scores, dtype=np.float32)
    if top_k == 1:
        return pa.array(labels[:, 0].tolist(), pa.string()), pa.array(scores[:, 0], pa.float32())
    offsets = pa.array(np.arange(0, scores.size + 1, max(scores.shape[1], 1), dtype=np.int32))
    names = pa.ListArray.from_arrays(offsets, pa.array(labels.reshape(-1).tolist(), pa.string()))
    values = pa.ListArray.from_arrays(offsets, pa.array(scores.reshape(-1), pa.float32()))
    return names, values


def read_labels(path: str, key: str) -> list[str]:
    """Class names from a file, in class-index order.

    A ``.json`` file holds a list of names, or an object of index -> name (``{"0": "tench"}``)
    or index -> ``[id, name]`` (Keras' ``imagenet_class_index.json``); any other file holds one
    name per line (blank lines ignored). Raises :class:`DataError` naming ``key`` for a missing,
    empty or unreadable file, or a JSON object whose indexes are not 0..n-1.
    """
    import json

    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise DataError(f"labels file does not exist: {path}", key=key)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.lower().endswith(".json"):
            data = json.loads(text)
            if isinstance(data, dict):
                indexed = {int(k): v[-1] if isinstance(v, list) else v for k, v in data.items()}
                if sorted(indexed) != list(range(len(indexed))):
                    raise ValueError("its keys are not the class indexes 0..n-1")
                data = [indexed[i] for i in range(len(indexed))]
            names = [str(name) for name in data]
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise DataError(f"cannot read labels file {path}: {exc}", key=key) from None
    if not names:
        raise DataError(f"labels file {path} holds no class names", key=key)
    return names
