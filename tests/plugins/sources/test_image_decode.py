"""Image files become [height, width, channels] uint8 arrays; a bad file is named, not fatal."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
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


def test_16_bit_images_need_a_mode(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000).save(path)
    with pytest.raises(ImageDecodeError, match="set a mode"):
        decode_image(path.read_bytes(), str(path), mode=None)
    assert decode_image(path.read_bytes(), str(path), mode="L").shape == (4, 5, 1)


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
    with pytest.raises(ValueError, match="not one of"):
        check_mode("I;16")


def test_the_column_type_does_not_depend_on_the_rows():
    same = [np.zeros((4, 5, 3), np.uint8)] * 2
    assert image_column(same, "RGB", None).type == image_column_type("RGB", None)
    assert image_column([], "RGB", None).type == image_column_type("RGB", None)
    fixed = image_column(same, "RGB", (4, 5))
    assert fixed.type == image_column_type("RGB", (4, 5))
    assert fixed.type.shape == (4, 5, 3)
    assert image_column([], "L", (4, 5)).type == image_column_type("L", (4, 5))


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
