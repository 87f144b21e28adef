"""Batches of images through a transformers vision model, as its pipeline treats one image.

``transformers.pipeline("image-classification")`` and ``("image-feature-extraction")`` run one
image per ``preprocess -> forward -> postprocess`` round (their ``batch_size`` only stacks the
forward passes). The functions here do the same steps for a whole map batch at once: the image
processor on every image, one forward pass, the pipeline's score function and ordering, so each
row gets what the pipeline gives for that image alone (equal labels; scores equal up to float
rounding of a batched forward pass).

Images are ``[height, width, channels]`` uint8 arrays (channels last, as the images source
decodes them; 1 channel is L, 2 LA, 3 RGB, 4 RGBA), or uint16 for 16-bit grey. Like the pipeline,
which opens every image with ``load_image`` (``convert("RGB")``), one channel is repeated to
three and alpha is dropped before the image processor; 16-bit values are first scaled to 8 bits
by value (``round(v / 257)``, as the images source does), where Pillow's conversion would clip
them at 255.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from plugins.predictors._labels import scores_of, top_labels

ScoreFunction = Literal["default", "softmax", "sigmoid", "none"]
Pooling = Literal["pooler", "cls", "mean"]


def as_rgb(image: Any):
    """``[h, w, c]`` (or ``[h, w]``) uint8 -> ``[h, w, 3]``, as Pillow's ``convert("RGB")`` does.

    L (one channel) is repeated; LA and RGBA lose their alpha channel (Pillow drops it without
    compositing). A uint16 image (16-bit) is first scaled to 8 bits by value, ``round(v /
    257)``. Raises ValueError for other channel counts.
    """
    import numpy as np

    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
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


def vector_array(vectors: Any):
    """``[n, dim]`` float32 vectors as an Arrow ``fixed_size_list<float32, dim>`` array."""
    import numpy as np
    import pyarrow as pa

    vectors = np.asarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def load_pipeline(task: str, model: str, device: str | None, model_kwargs: dict[str, Any]):
    """``transformers.pipeline(task, model=...)`` on ``device`` (None: the GPU Ray assigned,
    else the CPU), with the model's image processor. ``model``: a local folder
    (``save_pretrained``) or a hub id. Raises :class:`~pipeline.contract.errors.DataError` naming
    ``params.model`` when it cannot be loaded, or lacks an image processor."""
    import transformers

    from pipeline.contract.errors import DataError
    from plugins.models import model_load_error, pick_device, resolve_model

    transformers.utils.logging.disable_progress_bar()
    try:
        pipe = transformers.pipeline(
            task, model=resolve_model(model), device=pick_device(device), **model_kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        raise model_load_error(model, exc, "params.model") from None
    if getattr(pipe, "image_processor", None) is None:
        raise DataError(
            f"model {model!r} has no image processor (preprocessor_config.json); save it with "
            "the model (image_processor.save_pretrained(folder))",
            key="params.model",
        )
    return pipe


def _model_config(model: str) -> dict[str, Any] | None:
    import json
    import os

    from plugins.models import resolve_model

    try:
        with open(os.path.join(resolve_model(model), "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


#: Model types whose pooled output is their last stage's channels (``hidden_sizes[-1]``).
_CONVOLUTIONAL = {"resnet", "convnext", "convnextv2", "regnet"}
#: Model types whose pooled output is ``pooler_output_size`` (ViT, DeiT) or ``hidden_size``, and
#: whose ``last_hidden_state`` is ``[rows, tokens, hidden_size]``.
_TRANSFORMERS = {
    "vit",
    "deit",
    "beit",
    "data2vec-vision",
    "dinov2",
    "clip_vision_model",
    "siglip_vision_model",
    "swin",
    "swinv2",
}


def embedding_dimension(model: str, pooling: Pooling) -> int | None:
    """The vector length :func:`embed` gives, read from a local model folder's ``config.json``.

    ``pooler``: the last of ``hidden_sizes`` for ResNet, ConvNeXt and RegNet (their pooled
    feature map); ``pooler_output_size`` or ``hidden_size`` for ViT, DeiT, BEiT, DINOv2, Swin
    and CLIP's or SigLIP's vision model. ``cls``/``mean``: ``hidden_size`` of those
    transformers. None for other models, or a folder that is not local: the length is then
    known only once the model runs.
    """
    config = _model_config(model)
    if config is None:
        return None
    kind = config.get("model_type")
    dim = None
    if kind in _CONVOLUTIONAL and pooling == "pooler":
        sizes = config.get("hidden_sizes")
        dim = sizes[-1] if isinstance(sizes, list) and sizes else None
    elif kind in _TRANSFORMERS:
        dim = config.get("hidden_size")
        if pooling == "pooler" and kind in ("vit", "deit"):
            dim = config.get("pooler_output_size") or dim
    return dim if isinstance(dim, int) and dim > 0 else None
