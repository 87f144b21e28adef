"""Images -> a model's input tensor on the CPU, as its own stage before the model.

Resize, center crop, scale to 0-1 floats and normalise per channel, channels first: the
preprocessing of Ray's ResNet batch-inference example and of torchvision's classification
weights (resize 256, crop 224, ImageNet mean and std by default), computed exactly as
``torchvision.transforms.v2`` computes it (see :mod:`plugins.preprocessors.image_ops`). As a
task stage it runs beside the model's actors, so batch N+1 is prepared while the model works
on batch N.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Preprocessor
from plugins.batches import added, require_images, to_arrow
from plugins.preprocessors.image_ops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    Interpolation,
    OutputDType,
    TransformSpec,
    output_type,
    transform_table,
)


class ImageTransformParams(PluginParams):
    input_column: str = Field(
        default="image",
        description="Column of [height, width, channels] uint8 images (uint16: 16-bit).",
    )
    output_column: str = Field(
        default="pixel_values",
        description="Column for the [channels, height, width] float tensors (the model's input).",
    )
    drop_input: bool = Field(
        default=True,
        description="Replace the image column by the tensors (false: keep both; the images "
        "then travel on to the model and the sink).",
    )
    resize: int | list[int] | None = Field(
        default=256,
        description="An int resizes the shorter side to it, keeping the aspect ratio; "
        "[height, width] resizes to exactly that; null: no resize.",
    )
    center_crop: int | list[int] | None = Field(
        default=224,
        description="Crop the centre to this size (an int or [height, width]); an image smaller "
        "than the crop is padded with zeros first. null: no crop.",
    )
    interpolation: Interpolation = Field(
        default="bilinear", description="Resize filter: bilinear, bicubic, nearest, nearest-exact."
    )
    antialias: bool = Field(
        default=True, description="Antialias when shrinking (bilinear and bicubic)."
    )
    mean: list[float] | None = Field(
        default=list(IMAGENET_MEAN),
        description="Per-channel mean on the 0-1 scale, subtracted after dividing by 255 (one "
        "value for every channel works too); null with std null: no normalisation.",
    )
    std: list[float] | None = Field(
        default=list(IMAGENET_STD), description="Per-channel standard deviation (0-1 scale)."
    )
    dtype: OutputDType = Field(default="float32", description="float32 or float16 output.")

    @field_validator("resize", "center_crop")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) not in (1, 2):
            raise ValueError("give an int or [height, width]")
        return value

    @model_validator(mode="after")
    def _spec_is_valid(self) -> ImageTransformParams:
        self.spec()  # raises ValueError with the reason
        return self

    def spec(self) -> TransformSpec:
        """The transform these params describe."""
        return TransformSpec(
            resize=self.resize,
            center_crop=self.center_crop,
            interpolation=self.interpolation,
            antialias=self.antialias,
            mean=None if self.mean is None else tuple(self.mean),
            std=None if self.std is None else tuple(self.std),
            dtype=self.dtype,
        )


class ImageTransformStage(Preprocessor):
    """Resize, center crop, scale and normalise images into a channels-first float tensor."""

    Params = ImageTransformParams
    libraries: ClassVar[tuple[str, ...]] = ("torch",)
    extras = {"torch": ("torch",)}
    default_stage: ClassVar[StageSettings] = StageSettings(
        batch_size=32, batch_format="pyarrow", compute="tasks"
    )

    def __init__(self, params: ImageTransformParams) -> None:
        super().__init__(params)
        self.transform = ImageTransform(params.spec())

    @classmethod
    def output_schema(cls, params: ImageTransformParams, schema: Any) -> Any:
        """``output_column``: a tensor of ``[channels, out_height, out_width]`` float32 (or
        float16) per row: fixed-shape when the images are (``source.params.size`` and ``mode``
        set), else variable-shaped (``tensor<float32>[?, ?, ?]``). With ``drop_input`` it takes
        the image column's place."""
        require_images(schema, params.input_column, "params.input_column", "image transforms")
        kind = output_type(params.spec(), schema.field(params.input_column).type)
        if not params.drop_input:
            return added(schema, **{params.output_column: kind})
        import pyarrow as pa

        fields = []
        for field in schema:
            if field.name == params.input_column:
                fields.append(pa.field(params.output_column, kind))
            elif field.name != params.output_column:
                fields.append(field)
        return pa.schema(fields, metadata=schema.metadata)

    def __call__(self, batch: Any) -> Any:
        p = self.params
        return transform_table(
            to_arrow(batch), self.transform, p.input_column, p.output_column, p.drop_input
        )
