"""The sentence_embedding predictor's backends: torch, ONNX Runtime, OpenVINO, and ``auto``.

``torch`` is sentence-transformers itself. ``onnx`` and ``openvino`` run the model's ONNX export
(:mod:`plugins.embedding_export`: made once per model and library versions with ``torch.onnx``,
cached on disk) on ONNX Runtime or on OpenVINO's runtime, which reads the same ONNX file; texts
are tokenized with the model's fast tokenizer (its ``tokenizer.json``, through the ``tokenizers``
library), truncated to the model's ``max_seq_length`` and padded to the longest text of the
batch, as sentence-transformers does. Pooling, Dense and Normalize modules are inside the
exported graph. A worker that runs an exported model imports neither torch nor
sentence-transformers. ``quantize: int8`` runs ONNX Runtime's dynamic int8 quantisation of the
export (:func:`plugins.embedding_export.quantized`).

``auto`` (:func:`choose`) picks, on the CPU, the fastest installed backend whose vectors match
torch's: it embeds :func:`~plugins.embedding_export.check_texts` with torch and with each
installed runtime (OpenVINO also in bfloat16 on CPUs with a bfloat16 unit; int8 only when
``quantize: int8`` is asked), keeps the backends whose every vector is within
:data:`FLOAT_MIN_COSINE` of torch's (:data:`INT8_MIN_COSINE` for int8), and times them on the
same texts (sorted by length, batches of :data:`CHECK_BATCH`, the worker's threads,
alternating, best of :data:`CHECK_ROUNDS`; at one thread, the usual case, by the process's CPU
time, which other processes on shared cores barely change: under a load of 20-40 on 2 cores,
wall times swapped the order of the backends between runs). The choice is written to the cache
(``auto/<entry>-<hash>.json``, keyed by the export, the runtimes' versions, ``quantize``, the
thread count and the processor) under a file lock, so it is made once per model and machine, by
the first worker; the others wait and read it. Delete the file to check again. Where only torch
is installed, ``auto`` is torch with nothing to check.

Nothing here imports torch, transformers or a runtime at module import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.contract.errors import ConfigError
from plugins import embedding_export
from plugins.embedding_export import Export, cosine

log = logging.getLogger("bulkinfer")

Backend = Literal["auto", "torch", "onnx", "openvino"]
Quantize = Literal["int8"]

#: The runtime module each exported-model backend imports, and its pip extra's name.
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
#: ``auto``'s reason where neither runtime's extra is installed.
ONLY_TORCH = "only torch is installed (neither bulkinfer[onnx] nor bulkinfer[openvino])"
#: The top-level modules each backend's extra (``bulkinfer[onnx]``, ``bulkinfer[openvino]``)
#: brings: the runtime, and ``onnx``, with which the export is read and quantised.
EXTRA_MODULES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx")}
#: Lowest cosine to torch's vector, on every check text, for ``auto`` to take a float32 backend.
FLOAT_MIN_COSINE = 0.9999
#: The same for an int8 variant (``quantize: int8``); MiniLM's lowest was 0.980 (RESULTS.md).
INT8_MIN_COSINE = 0.97
#: Texts per forward pass while ``auto`` times the backends.
CHECK_BATCH = 16
#: Timed passes per backend (alternating); the best counts.
CHECK_ROUNDS = 3
#: Bump when what a stored choice means changes.
CHOICE_VERSION = 2


def missing_modules(backend: str) -> list[str]:
    """The modules of ``backend``'s extra (:data:`EXTRA_MODULES`) that are not installed (found,
    not imported: cheap); none for torch."""
    gone = []
    for module in EXTRA_MODULES.get(backend, ()):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # an import hook that refuses it, a broken package
            found = False
        if not found:
            gone.append(module)
    return gone


def installed(backend: str) -> bool:
    """Whether ``backend``'s runtime and the rest of its extra are installed (found, not
    imported: cheap)."""
    return backend == "torch" or (backend in EXTRA_MODULES and not missing_modules(backend))


def missing_extra_message(backend: str, key: str) -> str | None:
    """One line for a ``backend`` whose extra is not installed, in the words bulkinfer uses for
    a plugin's missing extra (``... needs the extra 'onnx' of bulkinfer (module onnxruntime is
    not installed): pip install 'bulkinfer[onnx]'``); None when it is installed."""
    gone = missing_modules(backend)
    if not gone:
        return None
    what = f"module {gone[0]} is" if len(gone) == 1 else f"modules {', '.join(gone)} are"
    return (
        f"backend {backend!r} needs the extra {backend!r} of bulkinfer ({what} not installed): "
        f"pip install 'bulkinfer[{backend}]', or set {key}=auto or torch"
    )


def require_backend(backend: str, key: str) -> None:
    """Import ``backend``'s runtime; raise :class:`ConfigError` at ``key`` if that fails."""
    module = RUNTIMES.get(backend)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a library that breaks while importing
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"backend {backend!r} needs {module}, which cannot be imported ({first}). Install "
            f"it with `pip install 'bulkinfer[{backend}]'`, or set {key}=auto or torch.",
            key=key,
        ) from None


def thread_count(threads: int | None = None) -> int:
    """``threads``, else ``OMP_NUM_THREADS`` (the stage's ``num_threads``), else every CPU."""
    if threads:
        return threads
    with contextlib.suppress(ValueError):
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    return os.cpu_count() or 1


# -- exported models -----------------------------------------------------------------------------


class TokenizerFile:
    """The model's fast tokenizer, read from an export's ``tokenizer.json``.

    Truncates to ``max_seq_length`` (the export's unless given) and pads to the longest text of
    each call, on the sides the model's tokenizer uses, as sentence-transformers does.
    """

    def __init__(self, export: Export, max_seq_length: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.inputs = export.inputs
        self.max_seq_length = max_seq_length or export.max_seq_length
        self.tokenizer = Tokenizer.from_file(str(export.tokenizer))
        self.tokenizer.enable_truncation(
            self.max_seq_length, strategy="longest_first", direction=export.truncation_side
        )
        self.tokenizer.enable_padding(
            direction=export.padding_side,
            pad_id=export.pad_id,
            pad_type_id=export.pad_type_id,
            pad_token=export.pad_token,
        )
        self.unpadded = Tokenizer.from_file(str(export.tokenizer))
        self.unpadded.enable_truncation(
            self.max_seq_length, strategy="longest_first", direction=export.truncation_side
        )
        self.unpadded.no_padding()

    def encode(self, texts: list[str]) -> dict[str, Any]:
        """``{input: int64 array [len(texts), longest]}`` for each input of the graph."""
        import numpy as np

        encoded = self.tokenizer.encode_batch_fast(texts)
        columns = {
            "input_ids": [e.ids for e in encoded],
            "attention_mask": [e.attention_mask for e in encoded],
            "token_type_ids": [e.type_ids for e in encoded],
        }
        return {name: np.asarray(columns[name], dtype=np.int64) for name in self.inputs}

    def lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model sees them (special tokens, truncation)."""
        return [len(e.ids) for e in self.unpadded.encode_batch_fast(texts)]


class OnnxModel:
    """An exported model on ONNX Runtime (``onnx``) or OpenVINO (``openvino``).

    ``device``: ``cpu``, or ``cuda[:N]`` for ONNX Runtime's CUDA provider (``onnxruntime-gpu``);
    ``threads``: intra-op threads (None: :func:`thread_count`); ``model_file``: another ONNX file
    of the same graph (the int8 one); ``max_seq_length``: truncate there instead of the model's
    length; ``bf16``: OpenVINO computes in bfloat16 (``INFERENCE_PRECISION_HINT``; float32
    otherwise, which OpenVINO would not be by default on CPUs with bfloat16 units). Raises
    :class:`ConfigError` for a device the runtime cannot use.
    """

    def __init__(
        self,
        export: Export,
        backend: str,
        device: str = "cpu",
        threads: int | None = None,
        model_file: Path | None = None,
        max_seq_length: int | None = None,
        key: str = "predictor.params",
        bf16: bool = False,
    ) -> None:
        self.export, self.backend, self.bf16 = export, backend, bf16
        self.dimension = export.dimension
        self.tokenizer = TokenizerFile(export, max_seq_length)
        self.max_seq_length = self.tokenizer.max_seq_length
        self.threads = thread_count(threads)
        path = str(model_file or export.onnx)
        if backend == "onnx":
            self._run = self._onnxruntime(path, device, key)
        elif backend == "openvino":
            self._run = self._openvino(path, device, key)
        else:
            raise ValueError(f"not an exported-model backend: {backend!r}")

    def _onnxruntime(self, path: str, device: str, key: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"backend 'onnx' on device {device!r} needs ONNX Runtime's CUDA provider "
                    "(the onnxruntime-gpu package); set backend=torch (or auto) for GPUs",
                    key=f"{key}.backend",
                )
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        session = ort.InferenceSession(path, options, providers=providers)
        names = {i.name for i in session.get_inputs()}

        def run(features: dict[str, Any]) -> Any:
            return session.run(None, {k: v for k, v in features.items() if k in names})[0]

        return run

    def _openvino(self, path: str, device: str, key: str):
        if device != "cpu":
            raise ConfigError(
                f"backend 'openvino' runs on the CPU here, not on device {device!r}; set "
                "backend=torch (or auto) for GPUs",
                key=f"{key}.backend",
            )
        import openvino as ov

        # OpenVINO computes in bf16 by default on CPUs that have it (AMX, AVX512-BF16): only
        # where asked here (on MiniLM: cosine to torch 0.99996, and 1.9x the rows of f32).
        precision = "bf16" if self.bf16 else "f32"
        # OpenVINO pins its threads to cores by default, counting from the first core in every
        # process: two single-thread actors on one node then share one core (measured on 2 CPUs,
        # 8,000 sentences: 56.9 s whole process pinned, against 39.0 s for one two-thread actor).
        # The operating system places unpinned threads, as it does torch's and ONNX Runtime's.
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "INFERENCE_PRECISION_HINT": precision,
            "ENABLE_CPU_PINNING": False,
        }
        compiled = ov.Core().compile_model(path, "CPU", config)
        request = compiled.create_infer_request()
        names = {name for port in compiled.inputs for name in port.get_names()}

        def run(features: dict[str, Any]) -> Any:
            result = request.infer({k: v for k, v in features.items() if k in names})
            return result[compiled.output(0)].copy()  # the request reuses its output buffer

        return run

    def encode(self, texts: list[str], batch_size: int | None = None) -> Any:
        """``float32 [len(texts), dimension]``: one vector per text, in order, in forward passes
        of ``batch_size`` texts (None: one pass)."""
        import numpy as np

        size = batch_size or max(1, len(texts))
        parts = [
            self.run(self.tokenizer.encode(texts[start : start + size]))
            for start in range(0, len(texts), size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), np.float32)

    def encode_ids(self, ids: Any, mask: Any) -> Any:
        """Vectors of pre-tokenized rows: int64 ``ids`` and ``mask`` ``[rows, length]``."""
        import numpy as np

        features = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.export.inputs:
            features["token_type_ids"] = np.zeros_like(ids)
        return self.run(features)

    def run(self, features: dict[str, Any]) -> Any:
        """One forward pass over tokenized features: ``float32 [rows, dimension]``."""
        import numpy as np

        if not len(next(iter(features.values()))):
            return np.zeros((0, self.dimension), np.float32)
        return np.asarray(self._run(features), dtype=np.float32)


def load_exported(
    model: str,
    backend: str,
    quantize: str | None,
    device: str,
    cache: str | Path | None = None,
    threads: int | None = None,
    max_seq_length: int | None = None,
    key: str = "predictor.params",
    bf16: bool = False,
) -> OnnxModel:
    """``model`` (a local folder or hub id) on ONNX Runtime or OpenVINO, exported first if the
    cache lacks it (``bf16``: OpenVINO in bfloat16, see :class:`OnnxModel`). Raises
    :class:`ConfigError` at ``{key}.backend`` for a missing runtime or a model the export does
    not reproduce."""
    require_backend(backend, f"{key}.backend")
    if quantize == "int8":
        require_backend("onnx", f"{key}.quantize")
    try:
        export, _ = embedding_export.cached_export(model, cache)
    except embedding_export.ExportError as exc:
        raise ConfigError(f"{exc}; set {key}.backend=torch", key=f"{key}.backend") from None
    file = embedding_export.quantized(export)[0] if quantize == "int8" else None
    return OnnxModel(export, backend, device, threads, file, max_seq_length, key, bf16)


# -- auto ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What ``backend: auto`` runs, and why."""

    backend: str
    quantize: str | None
    #: One line: the figures behind the choice.
    reason: str
    #: Per candidate (see :func:`candidates`): ``rows_per_s`` (per second of the process's CPU
    #: time at one thread, of wall time at more) and ``cosine_min``.
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    threads: int | None = None
    checked_at: str | None = None
    #: ``bfloat16``: OpenVINO computes in bfloat16; None: in float32.
    model_dtype: str | None = None

    @property
    def name(self) -> str:
        return candidate_name(self.backend, self.quantize, self.model_dtype)


#: CPU flags of a bfloat16 unit OpenVINO computes with (x86: AVX512-BF16, AMX; Arm: BF16).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def candidate_name(backend: str, quantize: str | None, model_dtype: str | None = None) -> str:
    """``onnx``, ``onnx int8``, ``openvino bf16``, ...: how choices and counters name a variant."""
    variant = quantize or ("bf16" if model_dtype == "bfloat16" else None)
    return backend + (f" {variant}" if variant else "")


def parse_candidate(name: str) -> tuple[str, str | None, str | None]:
    """``(backend, quantize, model_dtype)`` of a :func:`candidate_name`."""
    backend, _, variant = name.partition(" ")
    return backend, "int8" if variant == "int8" else None, "bfloat16" if variant == "bf16" else None


def candidates(
    quantize: str | None, cpu_flags: set[str] | None = None, bf16: bool = True
) -> list[str]:
    """What ``auto`` weighs: torch and every installed runtime in float32; OpenVINO in bfloat16
    where the CPU has a bfloat16 unit (:data:`BF16_FLAGS`; held to the float32 floor like the
    others) unless ``bf16`` is False (``model_dtype: float32`` asks for float32 compute); ONNX
    Runtime's int8 only when ``quantize`` is ``int8``."""
    flags = embedding_export.cpu_flag_set() if cpu_flags is None else cpu_flags
    found = ["torch"] + [backend for backend in ("onnx", "openvino") if installed(backend)]
    if bf16 and installed("openvino") and flags & BF16_FLAGS:
        found.append("openvino bf16")
    if quantize == "int8" and installed("onnx"):
        found.append("onnx int8")
    return found


def _processor() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return name


def choice_key(model: str, quantize: str | None, threads: int, bf16: bool = True) -> dict[str, Any]:
    """What a stored choice depends on (JSON-able)."""
    runtimes = embedding_export.library_versions(("onnxruntime", "openvino", "onnx"))
    flags = sorted(embedding_export.cpu_flag_set())
    return {
        "version": CHOICE_VERSION,
        "candidates": candidates(quantize, bf16=bf16),
        "runtimes": runtimes,
        "threads": threads,
        "processor": _processor(),
        "cpu_flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
    }


def choice_file(
    model: str, quantize: str | None, threads: int, cache: str | Path | None, bf16: bool = True
) -> Path:
    """Where ``auto``'s choice for these inputs is stored (see the module docstring)."""
    key = choice_key(model, quantize, threads, bf16)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    entry = embedding_export.entry_folder(model, cache).name
    return embedding_export.cache_root(cache) / "auto" / f"{entry}-{digest}.json"


def _read_choice(path: Path) -> tuple[dict[str, Any], Choice] | None:
    try:
        data = json.loads(path.read_text())
        fields = {k: data[k] for k in Choice.__dataclass_fields__ if k in data}
        return data.get("key") or {}, Choice(**fields)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def stored_choice(
    model: str,
    quantize: str | None,
    threads: int,
    cache: str | Path | None = None,
    bf16: bool = True,
) -> Choice | None:
    """The stored ``auto`` choice for these inputs, or None; loads no model, imports no model
    library."""
    found = _read_choice(choice_file(model, quantize, threads, cache, bf16))
    return found[1] if found else None


def stored_choices(
    model: str, quantize: str | None, cache: str | Path | None = None, bf16: bool = True
) -> list[Choice]:
    """Every stored ``auto`` choice for ``model`` with these libraries on this machine, whatever
    the thread count it was checked at (what a dry run reports: it does not know the threads a
    worker will get). Loads no model, imports no model library."""
    entry = embedding_export.entry_folder(model, cache).name
    folder = embedding_export.cache_root(cache) / "auto"
    wanted = choice_key(model, quantize, 0, bf16)
    wanted.pop("threads")
    found = []
    for path in sorted(folder.glob(f"{entry}-*.json")):
        read = _read_choice(path)
        if read is None:
            continue
        key, choice = read
        key = dict(key)
        key.pop("threads", None)
        if key == wanted:
            found.append(choice)
    return sorted(found, key=lambda c: c.threads or 0)


def choose(
    model: str,
    quantize: str | None,
    threads: int | None = None,
    cache: str | Path | None = None,
    bf16: bool = True,
) -> Choice:
    """``auto``'s backend for ``model`` on this machine's CPU (see the module docstring):
    stored, or checked now (once: other processes wait on a file lock and read the result).
    ``bf16``: weigh OpenVINO in bfloat16 too (where the CPU has the unit).

    Never raises for a model the export does not cover: that choice is torch, with the reason.
    """
    threads = thread_count(threads)
    options = candidates(quantize, bf16=bf16)
    if options == ["torch"]:
        return Choice("torch", None, ONLY_TORCH)
    found = stored_choice(model, quantize, threads, cache, bf16)
    if found is not None:
        return found
    path = choice_file(model, quantize, threads, cache, bf16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with embedding_export._lock(path):
        found = stored_choice(model, quantize, threads, cache, bf16)
        if found is not None:
            return found
        choice = _check(model, options, threads, cache)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        record = {**asdict(choice), "key": choice_key(model, quantize, threads, bf16)}
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    log.warning("backend auto for %s: %s (%s)", model, choice.name, choice.reason)
    return choice


def _timed(fn: Any, texts: list[str], threads: int) -> tuple[float, Any]:
    """Seconds ``fn(texts)`` took: the process's CPU time at one thread (what other processes on
    shared cores do not change), wall time at more (where spinning threads would count)."""
    clock = time.process_time if threads == 1 else time.perf_counter
    started = clock()
    out = fn(texts)
    return clock() - started, out


def _check(model: str, options: list[str], threads: int, cache: str | Path | None) -> Choice:
    """Embed the check texts with every candidate, compare and time them; the choice."""
    import numpy as np

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        export, _ = embedding_export.cached_export(model, cache)
    except embedding_export.ExportError as exc:
        return Choice("torch", None, f"torch: {exc}", threads=threads, checked_at=stamp)
    except Exception as exc:  # a library that breaks while exporting: torch, never a failed job
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        why = f"torch: the ONNX export failed ({type(exc).__name__}: {first})"
        return Choice("torch", None, why, threads=threads, checked_at=stamp)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    reference = SentenceTransformer(model, device="cpu")
    tokenizer = TokenizerFile(export)
    texts = embedding_export.check_texts()
    lengths = tokenizer.lengths(texts)
    order = [i for i in np.argsort(-np.asarray(lengths), kind="stable") if lengths[i]]
    texts = [texts[i] for i in order]

    def in_batches(encode: Any) -> Any:
        def run(items: list[str]) -> Any:
            return np.concatenate(
                [encode(items[s : s + CHECK_BATCH]) for s in range(0, len(items), CHECK_BATCH)]
            )

        return run

    runners: dict[str, Any] = {
        "torch": in_batches(
            lambda batch: reference.encode(
                batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False
            )
        )
    }
    skipped: dict[str, str] = {}
    for name in options[1:]:
        backend, quantize, model_dtype = parse_candidate(name)
        try:
            file = embedding_export.quantized(export)[0] if quantize else None
            bf16 = model_dtype == "bfloat16"
            model = OnnxModel(export, backend, "cpu", threads, file, bf16=bf16)
            runners[name] = in_batches(model.encode)
        except Exception as exc:  # a runtime that is found but does not import or load
            skipped[name] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    best: dict[str, float] = {}
    vectors: dict[str, Any] = {}
    names = list(runners)
    for name in names:  # warm-up pass, also the vectors compared
        vectors[name] = runners[name](texts)
    for round_ in range(CHECK_ROUNDS):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, _ = _timed(runners[name], texts, threads)
            best[name] = min(best.get(name, float("inf")), seconds)
    figures: dict[str, dict[str, float]] = {}
    for name in names:
        low = float(np.nanmin(cosine(vectors[name], vectors["torch"])))
        figures[name] = {"rows_per_s": round(len(texts) / best[name], 1), "cosine_min": low}
    winner, reason = pick(figures, len(texts), threads)
    if skipped:
        reason += "; could not run: " + ", ".join(f"{n} ({why})" for n, why in skipped.items())
    backend, quantize, model_dtype = parse_candidate(winner)
    return Choice(backend, quantize, reason, figures, threads, stamp, model_dtype)


def pick(figures: dict[str, dict[str, float]], texts: int, threads: int) -> tuple[str, str]:
    """``(winner, reason)`` from each candidate's ``rows_per_s`` and ``cosine_min`` (``torch``
    among them): the fastest whose lowest cosine to torch reaches :data:`FLOAT_MIN_COSINE`
    (:data:`INT8_MIN_COSINE` for a name ending in ``int8``)."""

    def floor(name: str) -> float:
        return INT8_MIN_COSINE if name.endswith("int8") else FLOAT_MIN_COSINE

    passing = [n for n in figures if n == "torch" or figures[n]["cosine_min"] >= floor(n)]
    winner = max(passing, key=lambda n: figures[n]["rows_per_s"])
    rates = ", ".join(f"{n} {f['rows_per_s']:g}" for n, f in figures.items())
    unit = "rows per CPU second" if threads == 1 else "rows/s"
    reason = f"fastest of {rates} {unit} on {texts} check texts at {threads} thread(s)"
    if winner != "torch":
        reason += f", cosine to torch >= {figures[winner]['cosine_min']:.5f}"
    failed = [n for n in figures if n not in passing]
    if failed:
        reason += "; left out, vectors unlike torch's: " + ", ".join(
            f"{n} (cosine {figures[n]['cosine_min']:.6f} < {floor(n)})" for n in failed
        )
    return winner, reason
