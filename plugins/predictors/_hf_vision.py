"""Batches of images through a transformers vision model, as its pipeline treats one image.

``transformers.pipeline("image-classification")`` and ``("image-feature-extraction")`` run one
image per ``preprocess -> forward -> postprocess`` round (their ``batch_size`` only stacks the
forward passes). The functions here do the same steps for a whole map batch at once: the image
processor on every image, one forward pass, the pipeline's score function and ordering, so each
row gets what the pipeline gives for that image alone (equal labels; scores equal up to float
rounding of a batched forward pass).

Images are ``[height, width, channels]`` uint8 arrays (channels last, as the images source
decodes them). Like the pipeline, which opens every image with ``load_image`` (``convert("RGB")``),
one channel is repeated to three and a fourth (alpha) is dropped before the image processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

ScoreFunction = Literal["default", "softmax", "sigmoid", "none"]
Pooling = Literal["pooler", "cls", "mean"]


def as_rgb(image: Any):
    """``[h, w, c]`` (or ``[h, w]``) uint8 -> ``[h, w, 3]``, as Pillow's ``convert("RGB")`` does.

    L (one channel) is repeated; LA and RGBA lose their alpha channel (Pillow drops it without
    compositing). Raises ValueError for other channel counts.
    """
    import numpy as np

    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2] if array.ndim == 3 else 0
    if channels == 3:
        return array
    if channels in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    if channels == 4:
        return np.ascontiguousarray(array[:, :, :3])
    raise ValueError(f"an image of shape {array.shape} is not [height, width, 1-4 channels]")


def model_inputs(pipe: Any, images: Sequence[Any]) -> dict[str, Any]:
    """The image processor's output for ``images``, on the model's device and in its dtype.

    ``pipe``: a transformers pipeline (its ``image_processor``, ``model``, ``device``, ``dtype``).
    Returns ``{"pixel_values": [n, 3, H, W] tensor, ...}``.
    """
    rgb = [as_rgb(image) for image in images]
    inputs = pipe.image_processor(
        images=rgb, return_tensors="pt", input_data_format="channels_last"
    )
    inputs = inputs.to(pipe.dtype) if getattr(pipe, "dtype", None) is not None else inputs
    return {k: v.to(pipe.device) for k, v in inputs.items()}


def _forward(pipe: Any, images: Sequence[Any]):
    import torch

    with torch.inference_mode():
        return pipe.model(**model_inputs(pipe, images))


def score_function(config: Any, requested: ScoreFunction = "default") -> str:
    """``softmax``, ``sigmoid`` or ``none``: the image-classification pipeline's choice.

    ``default`` follows the model config as the pipeline does: regression -> none; multi-label
    or a single label -> sigmoid; several labels -> softmax.
    """
    if requested != "default":
        return requested
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return "none"
    if problem == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    if problem == "single_label_classification" or config.num_labels > 1:
        return "softmax"
    return getattr(config, "function_to_apply", None) or "none"


def scores_of(logits: Any, function: str):
    """``[n, labels]`` float logits -> float32 scores by ``function`` (in float32, like the
    pipeline, which converts half-precision logits to float32 first)."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float32)
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-values))
    if function == "softmax":
        shifted = np.exp(values - values.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return values


def top_labels(scores: Any, id2label: dict[int, str], top_k: int = 1):
    """The ``top_k`` best labels per row, best first: ``(labels, scores)``, each ``[n, k]``.

    ``k = min(top_k, labels)``, as in the pipeline. Ties keep the lower label index first (the
    pipeline's stable sort). ``labels`` is an object array of str, ``scores`` float32.
    """
    import numpy as np

    scores = np.asarray(scores, dtype=np.float32)
    k = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = np.array([id2label[i] for i in range(scores.shape[1])], dtype=object)
    return names[order], np.take_along_axis(scores, order, axis=1)


def classify(pipe: Any, images: Sequence[Any], top_k: int = 1, function: ScoreFunction = "default"):
    """Labels and scores of ``n`` images: ``(labels [n, k] str, scores [n, k] float32)``.

    ``pipe``: ``transformers.pipeline("image-classification", model=...)``. Row ``i`` equals
    ``pipe(Image.fromarray(images[i]), top_k=top_k, function_to_apply=function)``.
    """
    import torch

    logits = _forward(pipe, images)["logits"]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.to(torch.float32)
    scores = scores_of(logits.cpu().numpy(), score_function(pipe.model.config, function))
    return top_labels(scores, pipe.model.config.id2label, top_k)


def embed(pipe: Any, images: Sequence[Any], pooling: Pooling = "pooler"):
    """``n`` images -> ``[n, dim]`` float32 vectors from a vision model.

    ``pooling``: ``pooler`` -- the model's ``pooler_output``, flattened (ViT: dense+tanh of the
    [CLS] token; CLIP vision: layer-normed [CLS]; ResNet/ConvNeXt: pooled feature map), what
    ``pipeline("image-feature-extraction")(image, pool=True)`` returns; ``cls`` -- the first
    token of ``last_hidden_state``; ``mean`` -- the mean over its tokens. Raises ValueError when
    the model gives no pooled output (pooler) or no token sequence (cls, mean).
    """
    import torch

    outputs = _forward(pipe, images)
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{type(pipe.model).__name__} returns no pooled output; use pooling cls or mean"
            )
        vectors = pooled.reshape(pooled.shape[0], -1)
    else:
        hidden = outputs.last_hidden_state
        if hidden.dim() != 3:
            raise ValueError(
                f"{type(pipe.model).__name__} gives a hidden state of shape "
                f"{tuple(hidden.shape)}, not [rows, tokens, width]; use pooling pooler"
            )
        vectors = hidden[:, 0] if pooling == "cls" else hidden.mean(dim=1)
    return vectors.to(torch.float32).cpu().numpy()


def label_arrays(labels: Any, scores: Any, top_k: int):
    """``(labels, scores)`` of :func:`classify` as Arrow arrays, one value per row.

    ``top_k == 1``: ``string`` and ``float32``. ``top_k > 1``: ``list<string>`` and
    ``list<float32>``, best first (``k = min(top_k, labels)`` entries per row).
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


def vector_array(vectors: Any):
    """``[n, dim]`` float32 vectors as an Arrow ``fixed_size_list<float32, dim>`` array."""
    import numpy as np
    import pyarrow as pa

    vectors = np.asarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
