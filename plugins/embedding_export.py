"""A sentence-transformers model folder exported once to ONNX with ``torch.onnx``, into a cache.

ONNX Runtime and OpenVINO run the same file (``plugins/st_backends.py``); no Optimum is involved,
so the export works with whatever transformers and sentence-transformers the project runs.

What a cache entry (a folder under ``$BULKINFER_CACHE/backends``, else
``~/.cache/bulkinfer/backends``) holds:

``model.onnx``
    The whole encoder as the model folder's ``modules.json`` lists it (Transformer, Pooling,
    Dense, Normalize): int64 token ids ``[batch, sequence]`` in, the model's sentence embedding
    ``float32 [batch, dimension]`` out, both axes dynamic. Exported with the TorchScript-based
    exporter (``torch.onnx.export(..., dynamo=False)``, opset 17), which needs the ``onnx``
    package: 14 s for MiniLM here, against 71 s for the ``torch.export`` exporter (which also
    needs onnxscript), with the same vectors.
``tokenizer.json``
    The model's fast tokenizer (the Rust ``tokenizers`` file, including the lower-casing
    sentence-transformers adds for ``do_lower_case`` models).
``model.int8-<config>-ort<version>.onnx`` (made when first asked for)
    ONNX Runtime's dynamic int8 quantisation of ``model.onnx``
    (:func:`onnxruntime.quantization.quantize_dynamic`, per-channel weights; no calibration data).
``bulkinfer_export.json``
    Written last: what the runtimes need (graph inputs, ``max_seq_length``, padding and
    truncation, the dimension), the lowest cosine the export reached against torch, and the key
    the entry was made for.

The entry's name is a hash of what decides the exported file: the model's resolved path and,
for a local folder, the names, sizes and modification times of its files; the versions of torch,
transformers, sentence-transformers, tokenizers and onnx; :data:`CACHE_VERSION`. A changed
model or library gets a new entry (old entries are left for the user to delete).

**Once, never per worker.** The first worker that misses an entry takes a file lock beside it
(``<entry>.lock``, :mod:`filelock`); others wait on the lock and then read the finished entry. The
export is written into a temporary folder and renamed into place, so a reader never sees half an
entry, and an export that fails (or is killed) leaves nothing behind but the lock file. The same
holds for the int8 file. (File locks on network file systems are only as good as the file
system's; give each machine its own cache there.)

**Checked before it is kept.** The export is run (ONNX Runtime, else OpenVINO) on
:func:`check_texts` and compared with the torch model's own ``encode``: any sentence under
:data:`EXPORT_MIN_COSINE` fails the export with :class:`ExportError`, so a graph that traced a
shape-dependent branch wrong is never cached.

Nothing here imports torch, transformers or a runtime at module import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger("bulkinfer")

#: Bump when the layout of a cache entry changes.
CACHE_VERSION = 2
#: The file that marks a finished entry (written last, inside the temporary folder).
MARKER = "bulkinfer_export.json"
#: Distributions whose versions decide the exported file (recorded in the entry's key).
EXPORT_DISTRIBUTIONS = ("torch", "transformers", "sentence-transformers", "tokenizers", "onnx")
#: ONNX opset of the export (ONNX Runtime 1.17+ and OpenVINO 2023+ read it).
OPSET = 17
#: Lowest cosine similarity to torch's vectors, on every check text, for an export to be kept.
EXPORT_MIN_COSINE = 0.9999
#: sentence-transformers modules the export reproduces; anything else stays on torch.
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
#: Model inputs the export feeds, in this order, when the tokenizer produces them.
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportError(Exception):
    """The model cannot be exported (modules, prompts or tokenizer the export does not
    reproduce), or its export does not reproduce torch's vectors. The message says which."""


def default_cache() -> Path:
    """``$BULKINFER_CACHE/backends``, else ``~/.cache/bulkinfer/backends``."""
    root = os.environ.get("BULKINFER_CACHE") or Path.home() / ".cache" / "bulkinfer"
    return Path(root).expanduser() / "backends"


def cache_root(cache: str | Path | None) -> Path:
    """The cache folder ``cache`` names (``~`` expanded), else :func:`default_cache`."""
    return Path(cache).expanduser() if cache else default_cache()


def library_versions(names: tuple[str, ...] = EXPORT_DISTRIBUTIONS) -> dict[str, str | None]:
    """Installed versions of ``names`` (None: not installed), read from package metadata."""
    found: dict[str, str | None] = {}
    for name in names:
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


def export_key(model: str) -> dict[str, Any]:
    """Everything the exported file depends on, as a JSON-able mapping."""
    return {
        "cache_version": CACHE_VERSION,
        "libraries": library_versions(),
        **model_fingerprint(model),
    }


def entry_name(key: dict[str, Any]) -> str:
    """The cache folder's name for ``key``: the model folder's name, then a hash of the key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    stem = Path(str(key["model"])).name or "model"
    return f"{stem}-onnx-{digest}"


def weights_bytes(model: str) -> int | None:
    """Bytes of the weight files in a local model folder (``*.safetensors``, ``*.bin``,
    ``*.pt``, ``*.onnx``); None when ``model`` is not a local folder."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    suffixes = {".safetensors", ".bin", ".pt", ".pth", ".onnx"}
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in suffixes and p.is_file())


# -- the check texts ------------------------------------------------------------------------------

_WORDS = (
    "the a of and to in is was for on that with as it by at from this be are or an have not "
    "which one all were when there can more been has their if will would about into time only "
    "new some could these two may first then do any like other than now people over such our "
    "city river market report model data system music film school water price state early "
    "shipping quality delivery battery screen customer service cat dog mat rug stocks fell "
    "sharply today returned perfect condition well packed arrived box fast quickly slowly"
).split()


def check_texts(count: int = 64) -> list[str]:
    """``count`` fixed texts of 1 to 300 words (longer ones are truncated by the tokenizer),
    plus an empty text, one with accents and other scripts, and one with odd spacing: the same
    list on every machine, so an export's check and the ``auto`` choice see the same inputs.
    (Both leave out a text the tokenizer makes no token of, such as the empty text for a
    tokenizer that adds no special tokens: no runtime gives such a row a meaningful vector.)"""
    rng = random.Random(20261130)
    special = [
        "",
        "  Ünïcödé: café, naïve, 東京, Ελληνικά, emoji 🙂  ",
        "Tabs\tand\nnew lines, UPPER and lower CASE.",
    ]
    texts = list(special)
    while len(texts) < count:
        words = rng.randint(1, 300 if len(texts) % 8 == 0 else 60)
        sentence = " ".join(rng.choice(_WORDS) for _ in range(words))
        texts.append(sentence.capitalize() + ".")
    return texts[:count]


# -- the entry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """A finished cache entry, as its marker file describes it."""

    folder: Path
    #: Inputs of the ONNX graph, a subset of :data:`INPUTS` in that order.
    inputs: tuple[str, ...]
    max_seq_length: int
    dimension: int
    pad_id: int
    pad_token: str
    pad_type_id: int
    padding_side: str
    truncation_side: str
    #: Lowest cosine similarity to torch's vectors over :func:`check_texts` at export time.
    cosine_min: float

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer.json"

    @classmethod
    def read(cls, folder: Path) -> Export:
        """The entry in ``folder`` (raises OSError/ValueError if its marker is missing or bad)."""
        info = json.loads((folder / MARKER).read_text())
        return cls(
            folder=folder,
            inputs=tuple(info["inputs"]),
            max_seq_length=int(info["max_seq_length"]),
            dimension=int(info["dimension"]),
            pad_id=int(info["pad_id"]),
            pad_token=str(info["pad_token"]),
            pad_type_id=int(info["pad_type_id"]),
            padding_side=str(info["padding_side"]),
            truncation_side=str(info["truncation_side"]),
            cosine_min=float(info["cosine_min"]),
        )


def entry_folder(model: str, cache: str | Path | None = None) -> Path:
    """Where ``model``'s entry is (or would be) in ``cache``; looks at nothing but metadata."""
    return cache_root(cache) / entry_name(export_key(model))


def find_export(model: str, cache: str | Path | None = None) -> Export | None:
    """``model``'s finished entry in ``cache``, or None; exports nothing, imports no model
    library (what a dry run may call)."""
    folder = entry_folder(model, cache)
    try:
        return Export.read(folder)
    except (OSError, ValueError, KeyError):
        return None


def _lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path) + ".lock")


def cached_export(model: str, cache: str | Path | None = None) -> tuple[Export, bool]:
    """``model``'s cache entry; export it first if it is missing.

    Returns ``(export, exported)``: ``exported`` is True only for the call that made the entry.
    Safe against concurrent callers in other processes (see the module docstring). Raises
    :class:`ExportError` for a model the export does not reproduce, and whatever loading the
    model raises (OSError, ValueError); a failed export leaves no entry behind.
    """
    root = cache_root(cache)
    final = root / entry_name(export_key(model))
    found = find_export(model, cache)
    if found is not None:
        return found, False
    root.mkdir(parents=True, exist_ok=True)
    with _lock(final):
        found = find_export(model, cache)  # another worker finished while we waited
        if found is not None:
            return found, False
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        try:
            log.warning("exporting %s to ONNX into %s (once)", model, final)
            _export(model, tmp)
            os.rename(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
            raise
    return Export.read(final), True


class _Encoder:
    """Builds the ``torch.nn.Module`` the export traces: token tensors -> sentence embedding."""

    @staticmethod
    def build(model: Any, inputs: tuple[str, ...]) -> Any:
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: Any) -> Any:
                return self.model(dict(zip(inputs, tensors, strict=True)))["sentence_embedding"]

        return Encoder().eval()


def _unsupported(model: Any) -> str | None:
    """Why the export cannot reproduce ``model`` (a SentenceTransformer), or None."""
    kinds = [type(module).__name__ for module in model]
    others = [kind for kind in kinds if kind not in SUPPORTED_MODULES]
    if others or not kinds or kinds[0] != "Transformer":
        return f"its modules are {kinds}; the export covers {list(SUPPORTED_MODULES)}"
    if getattr(model, "default_prompt_name", None):
        return f"it prepends the prompt {model.default_prompt_name!r} to every text"
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        return "it has no fast (Rust) tokenizer"
    if tokenizer.pad_token is None:
        return "its tokenizer has no padding token"
    return None


def _export(model: str, into: Path) -> None:
    """Export ``model`` into the (empty) folder ``into``, check it against torch, write the
    marker last. Raises :class:`ExportError` (see :func:`cached_export`)."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device="cpu")
    why = _unsupported(st)
    if why:
        raise ExportError(f"the ONNX export does not cover this model: {why}")
    tokenizer = st.tokenizer
    tokenizer.backend_tokenizer.save(str(into / "tokenizer.json"))
    names = set(getattr(tokenizer, "model_input_names", None) or ("input_ids", "attention_mask"))
    inputs = tuple(name for name in INPUTS if name in names | {"input_ids", "attention_mask"})
    info: dict[str, Any] = {
        "inputs": list(inputs),
        "max_seq_length": int(st.max_seq_length),
        "pad_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        "padding_side": str(getattr(tokenizer, "padding_side", "right")),
        "truncation_side": str(getattr(tokenizer, "truncation_side", "right")),
        "dimension": 0,
        "cosine_min": 0.0,
    }
    (into / MARKER.replace(".json", ".partial.json")).write_text(json.dumps(info))
    partial = _PartialExport(into, info)
    sample = partial.tokenize(["A short text.", "A longer text with a few more words in it."])
    args = tuple(torch.as_tensor(sample[name]) for name in inputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about every Python branch it records as constant; the check below
        # runs the graph on other shapes and compares it with torch instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Encoder.build(st, inputs),
            args,
            str(into / "model.onnx"),
            input_names=list(inputs),
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    graph_inputs = _graph_inputs(into / "model.onnx")
    info["inputs"] = [name for name in inputs if name in graph_inputs]
    texts = [t for t, n in zip(check_texts(), partial.lengths(check_texts()), strict=True) if n]
    expected = st.encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    info["dimension"] = int(expected.shape[1])
    got = _run_check(into, info, texts)
    cosines = cosine(got, expected)
    info["cosine_min"] = float(cosines.min())
    bad = ~np.isfinite(cosines) | (cosines < EXPORT_MIN_COSINE)
    if bad.any():
        worst = int(np.flatnonzero(bad)[0])
        raise ExportError(
            f"the ONNX export of {model} does not reproduce torch's vectors (cosine "
            f"{cosines[worst]:.6f} on check text {worst}, at least {EXPORT_MIN_COSINE} needed)"
        )
    info["key"] = export_key(model)
    (into / MARKER.replace(".json", ".partial.json")).unlink()
    (into / MARKER).write_text(json.dumps(info, indent=1, sort_keys=True))


class _PartialExport:
    """An entry being made: tokenizes with its ``tokenizer.json`` before the marker exists."""

    def __init__(self, folder: Path, info: dict[str, Any]) -> None:
        self.export = Export(
            folder=folder,
            inputs=tuple(info["inputs"]),
            max_seq_length=info["max_seq_length"],
            dimension=info["dimension"],
            pad_id=info["pad_id"],
            pad_token=info["pad_token"],
            pad_type_id=info["pad_type_id"],
            padding_side=info["padding_side"],
            truncation_side=info["truncation_side"],
            cosine_min=info["cosine_min"],
        )

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        from plugins.st_backends import TokenizerFile

        return TokenizerFile(self.export).encode(texts)

    def lengths(self, texts: list[str]) -> list[int]:
        from plugins.st_backends import TokenizerFile

        return TokenizerFile(self.export).lengths(texts)


def _graph_inputs(path: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return {i.name for i in graph.input if i.name not in initializers}


def _run_check(folder: Path, info: dict[str, Any], texts: list[str]) -> Any:
    """The new export's vectors for ``texts``, on ONNX Runtime if installed, else OpenVINO."""
    from plugins import st_backends

    partial = _PartialExport(folder, info).export
    problems = []
    for backend in ("onnx", "openvino"):
        try:
            runtime = st_backends.OnnxModel(partial, backend, "cpu", threads=None)
        except ImportError as exc:
            problems.append(f"{st_backends.RUNTIMES[backend]}: {exc}")
            continue
        return runtime.encode(texts, batch_size=16)
    raise ExportError(f"no runtime to check the export with ({'; '.join(problems)})")


def cosine(a: Any, b: Any) -> Any:
    """Row-wise cosine similarity of two ``[n, d]`` arrays, in float64; two all-zero rows (mean
    pooling over a text without tokens) count as 1.0, one all-zero row against another as 0.0.
    """
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~a.any(axis=1) & ~b.any(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        similarity = (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)
    return np.where(both_zero, 1.0, np.where(norms > 0, similarity, 0.0))


# -- int8 ----------------------------------------------------------------------------------------


def int8_config(machine: str | None = None, cpu_flags: set[str] | None = None) -> str:
    """The processor family the int8 file is made for: ``arm64``, ``avx512_vnni``, ``avx512``
    or ``avx2`` (x86 without VNNI gets 7-bit weights, ``reduce_range``, against overflow in
    ONNX Runtime's u8s8 kernels)."""
    machine = (machine or platform.machine()).lower()
    if machine in {"arm64", "aarch64"}:
        return "arm64"
    flags = cpu_flags if cpu_flags is not None else cpu_flag_set()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def cpu_flag_set() -> set[str]:
    """This machine's CPU flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_file(export: Export, config: str | None = None) -> Path:
    """Where the int8 file of ``export`` for ``config`` is (or would be)."""
    config = config or int8_config()
    ort = library_versions(("onnxruntime",))["onnxruntime"] or "none"
    return export.folder / f"model.int8-{config}-ort{ort}.onnx"


def quantized(export: Export, config: str | None = None) -> tuple[Path, bool]:
    """The int8 file of ``export`` (:func:`int8_file`); quantise first if it is missing.

    Returns ``(path, made)``. Same locking and atomic rename as :func:`cached_export`.
    """
    config = config or int8_config()
    final = int8_file(export, config)
    if final.is_file():
        return final, False
    with _lock(final):
        if final.is_file():
            return final, False
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            log.warning("quantising %s to int8 (%s) into %s (once)", export.onnx, config, final)
            quiet = _Quiet()  # quantize_dynamic logs a pre-processing hint on the root logger
            logging.getLogger().addFilter(quiet)
            try:
                quantize_dynamic(
                    str(export.onnx),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=config in ("avx2", "avx512"),
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            finally:
                logging.getLogger().removeFilter(quiet)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return final, True


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()
