"""A vision model's pooled output as a float32 vector per image, for the same sinks as text.

Each row gets what ``transformers.pipeline("image-feature-extraction", model=...)(image,
pool=True)`` gives for that image alone (see :mod:`plugins.predictors._hf_vision`), for a whole
map batch in one forward pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins.batches import added, image_rows, require_images, to_arrow, with_column
from plugins.models import check_model_folder, offline_env
from plugins.predictors import _hf_vision as vision
from plugins.predictors.image_classification import VisionModelParams


class ImageEmbeddingParams(VisionModelParams):
    output_column: str = Field(default="embedding", description="Column for the vectors.")
    pooling: vision.Pooling = Field(
        default="pooler",
        description="pooler: the model's pooled output (ViT: dense + tanh of the [CLS] token; "
        "ResNet/ConvNeXt: the pooled feature map), as the pipeline's pool=True; cls: the first "
        "token of the last hidden state; mean: the mean over its tokens.",
    )
    normalize: bool = Field(
        default=False, description="Scale each vector to unit length (L2), for cosine search."
    )


class ImageEmbedding(Predictor):
    """Embed images with a transformers vision model: a float32 vector per image."""

    Params = ImageEmbeddingParams
    libraries: ClassVar[tuple[str, ...]] = ("transformers", "torch", "pillow")
    extras = {"transformers": ("transformers", "torch"), "images": ("PIL",)}
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=32, batch_format="pyarrow"
    )

    def __init__(self, params: ImageEmbeddingParams) -> None:
        super().__init__(params)
        self.pipe = vision.load_pipeline(
            "image-feature-extraction", params.model, params.device, params.model_kwargs
        )

    @classmethod
    def output_schema(cls, params: ImageEmbeddingParams, schema: Any) -> Any:
        """``output_column``: ``fixed_size_list<float32>[dim]`` when the local model folder's
        config tells the dimension (see :func:`~plugins.predictors._hf_vision.
        embedding_dimension`), else ``list<float32>``."""
        import pyarrow as pa

        require_images(schema, params.input_column, "params.input_column", "image embeddings")
        check_model_folder(params.model, "params.model")
        dim = vision.embedding_dimension(params.model, params.pooling)
        vector = pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())
        return added(schema, **{params.output_column: vector})

    @classmethod
    def env_vars(cls, params: ImageEmbeddingParams) -> dict[str, str]:
        """The model hub's offline switches when ``model`` is a local folder."""
        return offline_env(params.model)

    def __call__(self, batch: Any) -> Any:
        import numpy as np

        p = self.params
        table = to_arrow(batch)
        images = image_rows(table, p.input_column, "params.input_column")
        vectors = vision.embed(self.pipe, images, p.pooling)
        if p.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return with_column(table, p.output_column, vision.vector_array(vectors))
