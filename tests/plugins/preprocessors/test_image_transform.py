"""image_transform computes what torchvision.transforms.v2 computes, for whole batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from plugins.preprocessors.image_ops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    TransformSpec,
    output_type,
    resized_size,
    transform_table,
)
from plugins.samples.images import picture
from plugins.sources.image_decode import image_column
from tools.torchvision_reference import CASES, images

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "image_transform_reference.npz"


def _spec(case: dict, channels: int) -> TransformSpec:
    case = dict(case)
    if case.get("mean", IMAGENET_MEAN) is not None:  # one value per channel, as the reference
        case["mean"] = case.get("mean", IMAGENET_MEAN)[:channels]
        case["std"] = case.get("std", IMAGENET_STD)[:channels]
    return TransformSpec(**case)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_image_equals_torchvision_v2_output(name):
    """Recorded from torchvision 0.28.0 by tools/torchvision_reference.py (bit for bit there)."""
    reference = np.load(REFERENCE)
    for i, image in enumerate(images()):
        out = ImageTransform(_spec(CASES[name], image.shape[2]))([image])
        expected = reference[f"{name}/{i}"]
        assert out.shape == (1, *expected.shape)
        np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-6)


def test_a_batch_equals_its_images_one_by_one():
    batch = [picture(37, 53, seed=i) for i in range(4)] + [picture(64, 48, seed=9)]
    transform = ImageTransform(TransformSpec(resize=32, center_crop=24))
    together = transform(batch)
    assert together.shape == (5, 3, 24, 24) and together.dtype == np.float32
    for i, image in enumerate(batch):
        assert np.array_equal(together[i], transform([image])[0])
    stacked = transform(np.stack(batch[:4]))  # a [n, h, w, c] array works as well
    assert np.array_equal(stacked, together[:4])


def test_resize_keeps_the_aspect_ratio_as_torchvision_rounds_it():
    assert resized_size(300, 400, [256]) == (256, 341)  # int(256 * 400 / 300)
    assert resized_size(400, 300, [256]) == (341, 256)
    assert resized_size(400, 300, [100, 50]) == (100, 50)
    spec = TransformSpec(resize=256, center_crop=None)
    assert spec.output_size(300, 400) == (256, 341)
    assert spec.fixed_output_size() is None
    assert TransformSpec().fixed_output_size() == (224, 224)


def test_images_that_come_out_in_different_sizes_are_refused():
    transform = ImageTransform(TransformSpec(resize=16, center_crop=None))
    with pytest.raises(ValueError, match="set center_crop"):
        transform([picture(20, 30, seed=1), picture(30, 20, seed=2)])


def test_mean_and_std_must_fit_the_channels():
    grey = picture(20, 20, seed=1)[:, :, :1]
    with pytest.raises(ValueError, match="3 values for images with 1 channels"):
        ImageTransform(TransformSpec(resize=8, center_crop=8))([grey])
    one = ImageTransform(TransformSpec(resize=8, center_crop=8, mean=[0.5], std=[0.5]))
    assert one([grey]).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resize": 0}, "positive int"),
        ({"center_crop": [1, 2, 3]}, "positive int"),
        ({"mean": [0.5], "std": None}, "both mean and std"),
        ({"mean": [0.5, 0.5], "std": [0.5]}, "mean has 2 values"),
        ({"mean": [0.5], "std": [0.0]}, "must not contain 0"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformSpec(**kwargs)


def test_float16_output():
    out = ImageTransform(TransformSpec(resize=8, center_crop=8, dtype="float16"))(
        [picture(12, 12, seed=1)]
    )
    assert out.dtype == np.float16
    full = ImageTransform(TransformSpec(resize=8, center_crop=8))([picture(12, 12, seed=1)])
    np.testing.assert_allclose(out, full, atol=2e-3)


def test_table_column_types_are_fixed_only_when_the_images_are():
    spec = TransformSpec(resize=16, center_crop=12)
    ragged = pa.table(
        {
            "image": image_column([picture(20, 30, 1), picture(25, 25, 2)], "RGB", None),
            "path": ["a", "b"],
        }
    )
    out = transform_table(ragged, ImageTransform(spec))
    assert out.column_names == ["pixel_values", "path"]
    assert out.schema.field("pixel_values").type == output_type(spec, ragged.schema.field(0).type)
    rows = out.column("pixel_values").chunk(0).to_numpy(zero_copy_only=False)
    assert [r.shape for r in rows] == [(3, 12, 12), (3, 12, 12)]

    fixed = pa.table({"image": image_column([picture(20, 30, 1)] * 2, "RGB", (20, 30))})
    kept = transform_table(fixed, ImageTransform(spec), output_column="x", drop_input=False)
    assert kept.column_names == ["image", "x"]
    assert kept.schema.field("x").type.shape == (3, 12, 12)
    assert kept.column("x").chunk(0).to_numpy().shape == (2, 3, 12, 12)
    empty = transform_table(fixed.slice(0, 0), ImageTransform(spec))
    assert empty.num_rows == 0 and empty.schema.field(0).type.shape == (3, 12, 12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_16_bit_images_are_scaled_by_65535_as_torchvision_scales_uint16(name):
    """A 16-bit image (uint16) holding an 8-bit image's values times 257 is the same picture:
    without a resize the outputs are equal; a resize rounds 16-bit pixels to 16 bits, where
    torch's uint8 kernels round to 8 bits with fixed-point weights, so they differ by at most
    1.5 8-bit steps (1/255 each, before normalising)."""
    for image in images():
        spec = _spec(CASES[name], image.shape[2])
        eight = ImageTransform(spec)([image])
        sixteen = ImageTransform(spec)([image.astype(np.uint16) * 257])
        assert sixteen.dtype == eight.dtype and sixteen.shape == eight.shape
        std = np.asarray(spec.std if spec.std is not None else (1.0,), np.float32)
        step = (1.5 / 255 if spec.resize is not None else 0.0) / std.min()
        np.testing.assert_allclose(sixteen, eight, rtol=0, atol=step + 2e-6)


def test_16_bit_values_are_not_clipped_to_8_bits():
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)[:, :, None]
    spec = TransformSpec(resize=None, center_crop=None, mean=None, std=None)
    out = ImageTransform(spec)([values])
    np.testing.assert_array_equal(out[0, 0, 0], values[0, :, 0].astype(np.float32) / 65535)
