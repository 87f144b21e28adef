"""sentence-transformers models on ONNX Runtime or OpenVINO, exported once into a cache folder.

sentence-transformers runs a model on three backends (``SentenceTransformer(..., backend=...)``):
``torch``, ``onnx`` (ONNX Runtime through Hugging Face Optimum) and ``openvino`` (OpenVINO through
Optimum Intel). A model folder without an exported file is converted when it loads, which takes
seconds and would happen in every worker; so the first worker that needs an export makes it in a
temporary folder of the cache, saves the whole model there (``save_pretrained``: the modules, the
tokenizer and ``onnx/`` or ``openvino/``) and renames the folder into place. The rename is atomic:
workers that export at the same time each build their own folder, the first rename wins and the
others delete theirs, so a reader never sees a half-written export. Later loads (any worker, any
job) read the cached folder.

The cache entry is named by a hash of what decides the exported file: the model's resolved path
and, for a local folder, the names, sizes and modification times of its files; the backend and
the quantisation; the versions of sentence-transformers, transformers, torch and the backend's
libraries. A new library version or a changed model gets a new entry (old entries are left for
the user to delete).

``quantize: int8`` applies ONNX Runtime's dynamic int8 quantisation to the ONNX export
(sentence-transformers' ``export_dynamic_quantized_onnx_model``; no calibration data), with the
configuration for this processor (``avx512_vnni``, ``avx512``, ``avx2`` or ``arm64``).

Nothing here imports a model library at module import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import platform
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pipeline.contract.errors import ConfigError

log = logging.getLogger("bulkinfer")

Backend = Literal["torch", "onnx", "openvino"]
Quantize = Literal["int8"]

#: Bump when the layout of a cache entry changes.
CACHE_VERSION = 1
#: The file that marks a finished export (written last, inside the temporary folder).
MARKER = "bulkinfer_export.json"

#: Modules each backend imports when it loads, and the pip extra that installs them.
BACKEND_MODULES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "optimum.onnxruntime"),
    "openvino": ("openvino", "optimum.intel.openvino"),
}
#: Distributions whose versions decide an export (recorded in the cache key).
BACKEND_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("optimum", "optimum-onnx", "onnxruntime", "onnx"),
    "openvino": ("optimum", "optimum-intel", "openvino"),
}
COMMON_DISTRIBUTIONS = ("sentence-transformers", "transformers", "torch")


def require_backend(backend: str, key: str) -> None:
    """Import the backend's libraries; raise :class:`ConfigError` (at ``key``) if that fails.

    ``torch`` needs nothing beyond sentence-transformers itself.
    """
    for module in BACKEND_MODULES.get(backend, ()):
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a library that breaks while importing
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(
                f"backend {backend!r} needs {module}, which cannot be imported ({first}). "
                f"Install it with `pip install 'bulkinfer[{backend}]'` (sentence-transformers' "
                f"{backend} extra), or set {key}=torch.",
                key=key,
            ) from None


def default_cache() -> Path:
    """``$BULKINFER_CACHE/backends``, else ``~/.cache/bulkinfer/backends``."""
    root = os.environ.get("BULKINFER_CACHE") or Path.home() / ".cache" / "bulkinfer"
    return Path(root).expanduser() / "backends"


def library_versions(backend: str) -> dict[str, str | None]:
    """Versions of the distributions that decide an export (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in COMMON_DISTRIBUTIONS + BACKEND_DISTRIBUTIONS.get(backend, ()):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def model_fingerprint(model: str) -> dict[str, Any]:
    """What identifies ``model``: its real path and, for a folder, each file's size and mtime."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return {"model": model}  # a hub id: the revision is the hub's business
    files = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        files.append([file.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns])
    return {"model": str(path.resolve()), "files": files}


def int8_config(machine: str | None = None, cpu_flags: set[str] | None = None) -> str:
    """The dynamic-quantisation configuration for this processor, as sentence-transformers
    names them: ``arm64``, ``avx512_vnni``, ``avx512`` or ``avx2``."""
    machine = (machine or platform.machine()).lower()
    if machine in {"arm64", "aarch64"}:
        return "arm64"
    flags = cpu_flags if cpu_flags is not None else _cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def export_key(model: str, backend: str, quantize: str | None) -> dict[str, Any]:
    """Everything an export depends on, as a JSON-able mapping."""
    return {
        "cache_version": CACHE_VERSION,
        "backend": backend,
        "quantize": quantize,
        "int8_config": int8_config() if quantize == "int8" else None,
        "libraries": library_versions(backend),
        **model_fingerprint(model),
    }


def entry_name(key: dict[str, Any]) -> str:
    """The cache folder's name for ``key``: readable prefix, then a hash of the whole key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = Path(str(key["model"])).name or "model"
    tag = key["backend"] + (f"-{key['quantize']}" if key["quantize"] else "")
    return f"{stem}-{tag}-{digest}"


def model_file(backend: str, quantize: str | None, config: str | None) -> str:
    """The exported file inside a cache entry, as ``model_kwargs={"file_name": ...}`` takes it."""
    if backend == "openvino":
        return "openvino/openvino_model.xml"
    if quantize == "int8":
        return f"onnx/model_qint8_{config}.onnx"
    return "onnx/model.onnx"


def _export(model: str, backend: str, quantize: str | None, key: dict, into: Path) -> None:
    """Convert ``model`` for ``backend`` and save it, whole, into the (empty) folder ``into``."""
    from sentence_transformers import SentenceTransformer

    converted = SentenceTransformer(model, device="cpu", backend=backend)
    converted.save_pretrained(str(into))
    if quantize == "int8":
        from sentence_transformers import export_dynamic_quantized_onnx_model

        export_dynamic_quantized_onnx_model(converted, key["int8_config"], str(into))
    (into / MARKER).write_text(json.dumps(key, indent=1, sort_keys=True))


def cached_export(
    model: str, backend: str, quantize: str | None, cache: str | Path | None = None
) -> tuple[Path, bool]:
    """The cache folder holding ``model`` exported for ``backend``; export it if missing.

    Returns ``(folder, exported)``: ``exported`` is True only for the call that made the folder.
    Safe against concurrent callers (see the module docstring). Raises whatever the export raises
    (the caller turns it into a user-facing error); a failed export leaves nothing behind.
    """
    root = Path(cache).expanduser() if cache else default_cache()
    key = export_key(model, backend, quantize)
    final = root / entry_name(key)
    if (final / MARKER).is_file():
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        log.warning("exporting %s for the %s backend into %s (once)", model, backend, final)
        _export(model, backend, quantize, key, tmp)
        try:
            os.rename(tmp, final)  # atomic; fails if another worker's export is already there
        except OSError:
            if not (final / MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return final, False
        return final, True
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


def load(
    model: str,
    device: str,
    backend: str,
    quantize: str | None = None,
    cache: str | Path | None = None,
    key: str = "predictor.params",
) -> tuple[Any, str]:
    """``(SentenceTransformer, folder)``: ``model`` on ``backend``, and where it was loaded from
    (``model`` itself for torch, the cache entry otherwise; see above).

    ``device``: a torch device string; ``cuda...`` asks ONNX Runtime for its CUDA provider
    (``onnxruntime-gpu``). Raises :class:`ConfigError` at ``{key}.backend`` when the backend's
    libraries are missing.
    """
    from sentence_transformers import SentenceTransformer

    if backend == "torch":
        return SentenceTransformer(model, device=device), model
    require_backend(backend, f"{key}.backend")
    folder, _ = cached_export(model, backend, quantize, cache)
    config = int8_config() if quantize == "int8" else None
    model_kwargs: dict[str, Any] = {"file_name": model_file(backend, quantize, config)}
    if backend == "onnx" and device.startswith("cuda"):
        model_kwargs["provider"] = "CUDAExecutionProvider"
    loaded = SentenceTransformer(
        str(folder), device=device, backend=backend, model_kwargs=model_kwargs
    )
    return loaded, str(folder)
