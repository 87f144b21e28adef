"""Image preprocessing for models: resize, center crop, scale to float, normalise; channels first.

The four steps and their numbers are those of ``torchvision.transforms.v2`` (``Resize``,
``CenterCrop``, ``ToDtype(scale=True)``, ``Normalize``), the preprocessing of torchvision's
classification weights (``ResNet18_Weights.DEFAULT.transforms()`` is resize 256, center crop 224,
ImageNet mean/std) and of Ray's ResNet batch-inference example. They are computed with the same
torch kernels torchvision's tensor path calls (``torch.nn.functional.interpolate`` with
antialiasing, slicing, ``torch.nn.functional.pad``), because torchvision itself cannot be
installed beside the CPU build of torch this project pins: PyPI's torchvision is built for CUDA
and fails to import there. ``tests/data/image_transform_reference.npz`` holds torchvision
0.28.0's own output for the same inputs, and the tests compare against it.

Shapes: an image is ``[height, width, channels]`` uint8 (channels last, as decoded), or uint16 for
16-bit images, which ``ToDtype(scale=True)`` divides by 65535 instead of 255; the output
of :meth:`ImageTransform.__call__` for ``n`` images is ``[n, channels, out_height, out_width]``
float32 (or float16), channels first, as a model's ``forward`` takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Interpolation = Literal["bilinear", "bicubic", "nearest", "nearest-exact"]
OutputDType = Literal["float32", "float16"]

#: ImageNet channel statistics (RGB), the default of torchvision's and timm's classifiers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(value: int | Sequence[int] | None, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, int) else tuple(value)
    if len(values) not in (1, 2) or any(int(v) != v or v <= 0 for v in values):
        raise ValueError(f"{name} must be a positive int or [height, width], not {value!r}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class TransformSpec:
    """What to do to each image, in this order (any step may be left out with None).

    ``resize``: an int resizes the shorter side to it, keeping the aspect ratio (the longer side
    becomes ``int(resize * long / short)``, as torchvision computes it); ``[height, width]``
    resizes to exactly that. ``center_crop``: an int or ``[height, width]``; an image smaller
    than the crop is padded with zeros first (torchvision's rule). ``mean``/``std``: per channel,
    on the 0-1 scale, applied after the uint8 pixels are divided by 255; one value applies to
    every channel. ``dtype``: of the output (normalisation is computed in float32).
    """

    resize: int | tuple[int, ...] | None = 256
    center_crop: int | tuple[int, ...] | None = 224
    interpolation: Interpolation = "bilinear"
    antialias: bool = True
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    dtype: OutputDType = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", _pair(self.resize, "resize"))
        object.__setattr__(self, "center_crop", _pair(self.center_crop, "center_crop"))
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both mean and std, or neither")
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))
            if len(self.mean) != len(self.std):
                raise ValueError(f"mean has {len(self.mean)} values but std {len(self.std)}")
            if not all(self.std):
                raise ValueError("std must not contain 0")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the output for an input of ``height`` x ``width``."""
        if self.resize is not None:
            height, width = resized_size(height, width, self.resize)
        if self.center_crop is not None:
            crop = self.center_crop
            height, width = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
        return height, width

    def fixed_output_size(self) -> tuple[int, int] | None:
        """The output ``(height, width)`` if it does not depend on the input's size, else None."""
        if self.center_crop is not None or (self.resize is not None and len(self.resize) == 2):
            return self.output_size(1, 1)
        return None


def resized_size(height: int, width: int, size: Sequence[int]) -> tuple[int, int]:
    """torchvision's ``Resize`` output size: ``[s]`` sets the shorter side, ``[h, w]`` both."""
    if len(size) == 2:
        return int(size[0]), int(size[1])
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(size[0]), int(size[0] * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _center_crop(images, crop: Sequence[int]):
    """``[n, c, h, w]`` -> ``[n, c, crop_h, crop_w]``, zero-padded first if the crop is larger."""
    import torch.nn.functional as F

    crop_h, crop_w = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    height, width = images.shape[-2:]
    if crop_h > height or crop_w > width:
        left = (crop_w - width) // 2 if crop_w > width else 0
        top = (crop_h - height) // 2 if crop_h > height else 0
        right = (crop_w - width + 1) // 2 if crop_w > width else 0
        bottom = (crop_h - height + 1) // 2 if crop_h > height else 0
        images = F.pad(images, [left, right, top, bottom], value=0.0)
        height, width = images.shape[-2:]
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return images[..., top : top + crop_h, left : left + crop_w]


def _resize(images, size: Sequence[int], interpolation: str, antialias: bool, top: int = 255):
    """``[n, c, h, w]`` integer pixels (0 to ``top``) -> resized, of the same dtype, the way
    torchvision v2 resizes integer tensors.

    torch resizes uint8 natively on the CPU (bilinear with AVX2/AVX512 or on ARM; bicubic
    always); otherwise (other dtypes, e.g. 16-bit pixels held as int32) the pixels go through
    float32, are rounded and, for bicubic, clamped to 0-``top``, as torchvision does.
    """
    import platform

    import torch
    import torch.nn.functional as F

    new_h, new_w = resized_size(images.shape[-2], images.shape[-1], size)
    if (new_h, new_w) == tuple(images.shape[-2:]):
        return images
    smooth = interpolation in ("bilinear", "bicubic")
    antialias = antialias and smooth
    native = interpolation.startswith("nearest") or interpolation == "bicubic"
    if interpolation == "bilinear":
        native = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or (
            platform.machine() in ("aarch64", "arm64")
        )
    native = native and images.device.type == "cpu" and images.dtype == torch.uint8
    work = images if native else images.to(torch.float32)
    out = F.interpolate(
        work,
        size=[new_h, new_w],
        mode=interpolation,
        align_corners=False if smooth else None,
        antialias=antialias,
    )
    if not native:
        if interpolation == "bicubic":
            out = out.clamp_(0, top)
        out = out.round_().to(images.dtype)
    return out


class ImageTransform:
    """A :class:`TransformSpec` applied to batches of ``[h, w, c]`` uint8 images.

    Images of one shape are processed together as one ``[n, c, h, w]`` tensor; a batch of mixed
    shapes is processed shape by shape and put back in input order. Torch threads: whatever the
    worker process allows (Ray sets one per CPU of the task).
    """

    def __init__(self, spec: TransformSpec) -> None:
        self.spec = spec

    def __call__(self, images: Sequence[Any] | Any):
        """``n`` images -> ``[n, c, out_h, out_w]`` numpy array of ``spec.dtype``.

        ``images``: a ``[n, h, w, c]`` uint8 array, or a sequence of ``[h, w, c]`` (or ``[h, w]``)
        uint8 arrays of any sizes; uint16 arrays are 16-bit images (scaled by 65535). Raises
        ValueError if the output sizes differ (no crop and no fixed resize on images of
        different shapes) or if mean/std has neither 1 value nor one per channel.
        """
        import numpy as np

        arrays = [np.asarray(a) for a in images]
        if not arrays:
            return np.zeros((0, 0, 0, 0), dtype=self.spec.dtype)
        arrays = [a[:, :, None] if a.ndim == 2 else a for a in arrays]
        groups: dict[tuple[tuple[int, ...], Any], list[int]] = {}
        for i, array in enumerate(arrays):
            if array.ndim != 3 or array.dtype not in (np.uint8, np.uint16):
                raise ValueError(
                    f"image {i} is a {array.dtype} array of shape {array.shape}, not "
                    "[height, width, channels] uint8 (or uint16)"
                )
            groups.setdefault((array.shape, array.dtype), []).append(i)
        sizes = {self.spec.output_size(h, w) + (c,) for (h, w, c), _ in groups}
        if len(sizes) > 1:
            raise ValueError(
                "the images come out in different sizes "
                f"({', '.join(f'{h}x{w}x{c}' for h, w, c in sorted(sizes))}); set center_crop "
                "or resize to [height, width]"
            )
        out_h, out_w, channels = sizes.pop()
        result = np.empty((len(arrays), channels, out_h, out_w), dtype=self.spec.dtype)
        for rows in groups.values():
            result[rows] = self._apply(np.stack([arrays[i] for i in rows]))
        return result

    def _apply(self, batch):
        """``[n, h, w, c]`` uint8 (or uint16) numpy -> ``[n, c, out_h, out_w]`` numpy of
        ``spec.dtype``."""
        import numpy as np
        import torch

        spec = self.spec
        top = 65535 if batch.dtype == np.uint16 else 255
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)  # a channels-last view, no copy
        if top != 255:  # torch computes little on uint16: hold 16-bit pixels as int32
            images = images.to(torch.int32)
        if spec.resize is not None:
            images = _resize(images, spec.resize, spec.interpolation, spec.antialias, top)
        if spec.center_crop is not None:
            images = _center_crop(images, spec.center_crop)
        images = images.to(torch.float32).mul_(1.0 / top)
        if spec.mean is not None:
            channels = images.shape[1]
            if len(spec.mean) not in (1, channels):
                raise ValueError(
                    f"mean/std have {len(spec.mean)} values for images with {channels} channels"
                )
            mean = torch.as_tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.as_tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
            images = images.sub(mean).div_(std)
        return images.to(getattr(torch, spec.dtype)).contiguous().numpy()


def output_type(spec: TransformSpec, input_type: Any):
    """The Arrow type of the transformed column, given the image column's type.

    A fixed-shape image column ``(h, w, c)`` gives ``ArrowTensorTypeV2((c, out_h, out_w),
    dtype)``; a variable-shaped one gives ``ArrowVariableShapedTensorType(dtype, ndim=3)``
    (its channel count is not in the type), even when ``center_crop`` fixes the size.
    """
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorTypeV2, ArrowVariableShapedTensorType

    value = pa.float16() if spec.dtype == "float16" else pa.float32()
    variable = getattr(input_type, "extension_name", "") == "ray.data.arrow_variable_shaped_tensor"
    shape = None if variable else getattr(input_type, "shape", None)
    if shape is not None and len(shape) in (2, 3):
        height, width = shape[0], shape[1]
        channels = shape[2] if len(shape) == 3 else 1
        return ArrowTensorTypeV2((channels, *spec.output_size(height, width)), value)
    return ArrowVariableShapedTensorType(value, 3)


def transform_table(
    table: Any,
    transform: ImageTransform,
    input_column: str = "image",
    output_column: str = "pixel_values",
    drop_input: bool = True,
    key: str = "params.input_column",
):
    """Apply ``transform`` to ``table[input_column]``; return the table with ``output_column``.

    ``table``: a pyarrow Table whose ``input_column`` is an image tensor column (see
    ``plugins.sources.image_decode``) or nested lists of pixel values. The new column has exactly
    :func:`output_type` (so every block agrees); it replaces ``input_column`` in place when
    ``drop_input``, else it is appended (replacing an existing ``output_column``). A null image or
    values that are not uint8 pixels raise :class:`~pipeline.contract.errors.DataError` naming
    ``key``.
    """
    import numpy as np
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray, ArrowVariableShapedTensorArray

    from plugins.batches import image_rows

    images = image_rows(table, input_column, key)
    kind = output_type(transform.spec, table.schema.field(input_column).type)
    if not images:
        values = pa.ExtensionArray.from_storage(kind, pa.array([], type=kind.storage_type))
    elif kind.extension_name != "ray.data.arrow_variable_shaped_tensor":
        values = ArrowTensorArray.from_numpy(transform(images))
    else:
        out = transform(images)
        ragged = np.empty(len(out), dtype=object)
        for i, row in enumerate(out):
            ragged[i] = row
        values = ArrowVariableShapedTensorArray.from_numpy(ragged)
    if drop_input:
        if output_column != input_column and output_column in table.column_names:
            table = table.drop_columns([output_column])
        index = table.column_names.index(input_column)
        return table.set_column(index, output_column, values)
    if output_column in table.column_names:
        return table.set_column(table.column_names.index(output_column), output_column, values)
    return table.append_column(output_column, values)
