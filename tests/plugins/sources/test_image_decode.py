"""Image files become [height, width, channels] uint8 arrays; a bad file is named, not fatal."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from image_samples import deep_picture, encoded, mode_files
from PIL import Image

from plugins.samples.images import picture, write_image, write_test_images
from plugins.sources.image_decode import (
    ImageDecodeError,
    check_mode,
    check_size,
    decode_batch,
    decode_image,
    image_column,
    image_column_type,
    image_extensions,
)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_test_images(tmp_path_factory.mktemp("images"))


def _decode(sample, **kwargs):
    return decode_image(sample.path.read_bytes(), str(sample.path), **kwargs)


def test_every_readable_file_decodes_to_its_size_with_rgb_channels(samples):
    for sample in [s for s in samples if s.readable]:
        image = _decode(sample)
        assert image.dtype == np.uint8
        assert image.shape == (sample.height, sample.width, 3), sample.path


def test_mode_none_keeps_grey_and_alpha_and_turns_palettes_into_colours(samples):
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 3}
    for sample in [s for s in samples if s.readable]:
        assert _decode(sample, mode=None).shape[2] == channels[sample.mode], sample.path


def test_grey_images_keep_a_channel_axis(samples):
    sample = next(s for s in samples if s.mode == "L")
    assert _decode(sample, mode="L").shape == (sample.height, sample.width, 1)


def test_exif_orientation_is_applied(samples):
    rotated = next(s for s in samples if s.path.name == "rotated.jpg")
    stored = Image.open(rotated.path)
    assert stored.size == (40, 20)  # 40 wide, 20 high in the file
    assert _decode(rotated).shape == (40, 20, 3)  # shown upright: 40 high, 20 wide


def test_size_resizes_to_height_by_width_after_conversion(samples):
    for sample in [s for s in samples if s.readable]:
        assert _decode(sample, size=[12, 20]).shape == (12, 20, 3)
    palette = next(s for s in samples if s.mode == "P")
    # Filtered as colours: a palette image resized after conversion equals the RGB image resized.
    as_rgb = Image.open(palette.path).convert("RGB").resize((20, 12), Image.Resampling.BILINEAR)
    assert np.array_equal(_decode(palette, size=[12, 20]), np.asarray(as_rgb))


def test_decoded_pixels_are_pillows(tmp_path):
    path = write_image(tmp_path / "x.png", 9, 7, "RGB", seed=3)
    assert np.array_equal(decode_image(path.read_bytes(), str(path)), picture(9, 7, seed=3))


@pytest.mark.parametrize("name", ["not_an_image.jpg", "truncated.png"])
def test_a_file_that_is_not_a_readable_image_is_named_in_the_error(samples, name):
    bad = next(s for s in samples if s.path.name == name)
    with pytest.raises(ImageDecodeError, match=str(bad.path)):
        _decode(bad)


def test_16_bit_images_are_scaled_to_8_bits_by_value_never_clipped():
    """A 16-bit grey picture over the whole range: Pillow's own conversion clips it to 255
    (nearly white); decoding scales each value v to round(v / 257), in every mode."""
    deep = deep_picture(40, 60)
    data = encoded(Image.fromarray(deep), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    expected = ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8)
    clipped = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert (clipped == 255).mean() > 0.99  # what clipping did
    assert np.array_equal(decode_image(data, "deep.png")[:, :, 0], expected)  # mode RGB
    assert np.array_equal(decode_image(data, "deep.png")[:, :, 2], expected)
    assert np.array_equal(decode_image(data, "deep.png", mode="L")[:, :, 0], expected)
    kept = decode_image(data, "deep.png", mode=None)  # grey: [h, w, 1], scaled
    assert kept.shape == (40, 60, 1) and np.array_equal(kept[:, :, 0], expected)
    assert np.array_equal(
        decode_image(data, "d.png", mode="RGBA")[:, :, 3], np.full_like(deep, 255, np.uint8)
    )


@pytest.mark.parametrize("layout", ["I;16B", "I"])
def test_big_endian_and_32_bit_integer_images_of_16_bit_values_are_scaled_alike(layout):
    deep = deep_picture(20, 30)
    if layout == "I;16B":
        image = Image.frombytes("I;16B", (30, 20), deep.astype(">u2").tobytes())
    else:
        image = Image.fromarray(deep.astype(np.int32))
    data = encoded(image, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == layout
    expected = ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(decode_image(data, "x.tif")[:, :, 1], expected)
    assert np.array_equal(decode_image(data, "x.tif", mode="I;16")[:, :, 0], deep)


def test_mode_i16_keeps_16_bits_and_scales_8_bit_images_up_by_value():
    deep = deep_picture(20, 30)
    kept = decode_image(encoded(Image.fromarray(deep), "PNG"), "d.png", mode="I;16")
    assert kept.dtype == np.uint16 and kept.shape == (20, 30, 1)
    assert np.array_equal(kept[:, :, 0], deep)
    grey = picture(20, 30, seed=4)[:, :, 0]
    up = decode_image(encoded(Image.fromarray(grey), "PNG"), "g.png", mode="I;16")
    assert np.array_equal(up[:, :, 0], grey.astype(np.uint16) * 257)  # 255 -> 65535
    resized = decode_image(
        encoded(Image.fromarray(deep), "PNG"), "d.png", mode="I;16", size=[10, 15]
    )
    assert resized.dtype == np.uint16 and resized.shape == (10, 15, 1)
    wide = Image.fromarray(deep.astype(np.int32)).resize((15, 10), Image.Resampling.BILINEAR)
    assert np.array_equal(resized[:, :, 0], np.asarray(wide))  # Pillow's filter, 16 bits kept


def test_pixels_without_an_integer_scale_are_refused_naming_the_file():
    floats = encoded(Image.fromarray(np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)), "TIFF")
    with pytest.raises(ImageDecodeError, match="x.tif has 32-bit float pixels"):
        decode_image(floats, "x.tif")
    big = encoded(Image.fromarray(np.full((4, 5), 70000, np.int32)), "TIFF")
    with pytest.raises(ImageDecodeError, match="y.tif has 32-bit integer pixels outside 0-65535"):
        decode_image(big, "y.tif", mode=None)


@pytest.mark.parametrize("name", sorted(mode_files()))
def test_other_modes_are_converted_as_transformers_loads_them(name):
    """``transformers.image_utils.load_image`` is what the pipelines run on every image
    (``convert("RGB")``): mode RGB equals it, and mode null gives L, LA, RGB or RGBA, which the
    image predictors turn into the same RGB (4 channels are always RGBA, never CMYK)."""
    from transformers.image_utils import load_image

    from plugins.predictors._hf_vision import as_rgb

    data = mode_files()[name]
    stored = Image.open(io.BytesIO(data)).mode
    assert stored not in ("L", "RGB", "RGBA"), stored
    reference = np.asarray(load_image(Image.open(io.BytesIO(data))))
    assert np.array_equal(decode_image(data, name), reference)
    kept = decode_image(data, name, mode=None)
    channels = {"palette_transparent.png": 4, "grey_alpha.png": 2, "one_bit.png": 1}
    assert kept.shape[2] == channels.get(name, 3)
    assert np.array_equal(as_rgb(kept), reference)


def test_extensions_cover_the_common_formats_and_no_undecodable_ones():
    extensions = image_extensions()
    assert {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"} <= set(extensions)
    assert not {"eps", "ps", "mpeg", "h5", "grib"} & set(extensions)


def test_params_checks():
    assert check_size([224, 200]) == (224, 200)
    assert check_mode(None) is None
    for bad in ([224], [0, 3], [2.5, 3]):
        with pytest.raises(ValueError, match="height, width"):
            check_size(bad)
    assert check_mode("I;16") == "I;16" and check_mode("LA") == "LA"
    for other in ("CMYK", "YCbCr", "F", "P"):  # four channels are RGBA, three RGB, to a model
        with pytest.raises(ValueError, match="not one of L, LA, RGB, RGBA, I;16"):
            check_mode(other)


def test_the_column_type_does_not_depend_on_the_rows():
    same = [np.zeros((4, 5, 3), np.uint8)] * 2
    assert image_column(same, "RGB", None).type == image_column_type("RGB", None)
    assert image_column([], "RGB", None).type == image_column_type("RGB", None)
    fixed = image_column(same, "RGB", (4, 5))
    assert fixed.type == image_column_type("RGB", (4, 5))
    assert fixed.type.shape == (4, 5, 3)
    assert image_column([], "L", (4, 5)).type == image_column_type("L", (4, 5))
    deep = image_column([np.zeros((4, 5, 1), np.uint16)], "I;16", (4, 5))
    assert deep.type == image_column_type("I;16", (4, 5)) and deep.type.shape == (4, 5, 1)
    assert str(image_column_type("I;16", None).storage_type).count("uint16") == 1


def test_decode_batch_names_the_bad_file_and_keeps_other_columns(samples):
    good = [s for s in samples if s.readable][:3]
    table = pa.table(
        {
            "bytes": [s.path.read_bytes() for s in good],
            "path": [str(s.path) for s in good],
            "label": ["a", "b", "c"],
        }
    )
    out = decode_batch(table, mode="RGB")
    assert out.column_names == ["image", "path", "label"]
    assert out.column("path").to_pylist() == [str(s.path) for s in good]
    shapes = [row.shape for row in out.column("image").chunk(0).to_numpy(zero_copy_only=False)]
    assert shapes == [(s.height, s.width, 3) for s in good]
    assert decode_batch(table, include_paths=False).column_names == ["image", "label"]

    bad = next(s for s in samples if not s.readable)
    broken = pa.table({"bytes": [bad.path.read_bytes()], "path": [str(bad.path)]})
    with pytest.raises(ImageDecodeError, match=str(bad.path)):
        decode_batch(broken)
