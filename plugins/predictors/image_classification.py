"""A transformers image classifier as a predictor: a label and its score per image.

The model is a hub id or a local folder saved with its image processor; each row gets what
``transformers.pipeline("image-classification", model=...)`` gives for that image alone (see
:mod:`plugins.predictors._hf_vision`), for a whole map batch in one forward pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins.batches import added, image_rows, require_images, to_arrow, with_column
from plugins.models import check_model_folder, offline_env
from plugins.predictors import _hf_vision as vision
from plugins.predictors._labels import label_arrays, label_types


class VisionModelParams(PluginParams):
    """What the transformers image predictors share."""

    model: str = Field(
        description="A local model folder saved with its image processor (save_pretrained), or "
        "a hub id; both load the same way."
    )
    input_column: str = Field(
        default="image",
        description="Column of images: [height, width, channels] uint8 arrays, as source=images "
        "yields them (grey, LA and RGBA images are converted to RGB, as the pipeline does; "
        "uint16 ones are scaled to 8 bits by value).",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for transformers.pipeline() (dtype, revision, ...).",
    )
    device: str | None = Field(
        default=None, description="torch device; null: the GPU Ray assigned, else the CPU."
    )

    @field_validator("model_kwargs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("model_kwargs")
    @classmethod
    def _no_remote_code(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("trust_remote_code"):
            raise ValueError(
                "trust_remote_code runs code from the model's repository; a config may not turn "
                "it on. Register a predictor plugin for such a model instead."
            )
        clash = sorted({"task", "model", "device"} & set(value))
        if clash:
            raise ValueError(
                f"model_kwargs must not set {clash[0]}: use predictor.params.{clash[0]}"
            )
        return value


class ImageClassificationParams(VisionModelParams):
    label_column: str = Field(default="label", description="Column for the best label.")
    score_column: str = Field(default="score", description="Column for its score (float32).")
    top_k: int = Field(
        default=1,
        ge=1,
        description="Labels per image: 1 gives a string and a float32; more give lists of the "
        "best k labels and scores, best first.",
    )
    function_to_apply: vision.ScoreFunction = Field(
        default="default",
        description="Scores from logits: softmax, sigmoid or none; default follows the model "
        "config as the pipeline does (softmax for single-label models).",
    )


class ImageClassification(Predictor):
    """Classify images with a transformers model: label (string) and score (float32)."""

    Params = ImageClassificationParams
    libraries: ClassVar[tuple[str, ...]] = ("transformers", "torch", "pillow")
    extras = {"transformers": ("transformers", "torch"), "images": ("PIL",)}
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=32, batch_format="pyarrow"
    )

    def __init__(self, params: ImageClassificationParams) -> None:
        super().__init__(params)
        self.pipe = vision.load_pipeline(
            "image-classification", params.model, params.device, params.model_kwargs
        )

    @classmethod
    def output_schema(cls, params: ImageClassificationParams, schema: Any) -> Any:
        """``label_column``: string, ``score_column``: float32; with ``top_k > 1``
        ``list<string>`` and ``list<float32>``."""
        require_images(schema, params.input_column, "params.input_column", "image classifiers")
        check_model_folder(params.model, "params.model")
        label, score = label_types(params.top_k)
        return added(schema, **{params.label_column: label, params.score_column: score})

    @classmethod
    def env_vars(cls, params: ImageClassificationParams) -> dict[str, str]:
        """The model hub's offline switches when ``model`` is a local folder."""
        return offline_env(params.model)

    def __call__(self, batch: Any) -> Any:
        p = self.params
        table = to_arrow(batch)
        images = image_rows(table, p.input_column, "params.input_column")
        labels, scores = vision.classify(self.pipe, images, p.top_k, p.function_to_apply)
        names, values = label_arrays(labels, scores, p.top_k)
        table = with_column(table, p.label_column, names)
        return with_column(table, p.score_column, values)
