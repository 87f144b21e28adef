"""Decoding image files into pixel arrays (Pillow), one file at a time or a batch of them.

The ``images`` source reads files as bytes (``ray.data.read_binary_files``) and decodes them in
a map stage right after the read, so that a file that is not a readable image fails only its own
row: the stage's error policy then names it, skips it or sets it aside, instead of Ray's
``read_images`` failing the whole read task.

A decoded image is a ``[height, width, channels]`` uint8 array, channels last, 1 for ``L``, 2
for ``LA``, 3 for ``RGB``, 4 for ``RGBA``; with ``mode: I;16`` a ``[height, width, 1]`` uint16
array. The image column is one of Ray Data's tensor extension types:
``ArrowTensorTypeV2((height, width, channels), uint8)`` when every image has the same shape
(``size`` and ``mode`` both set), else ``ArrowVariableShapedTensorType(uint8, ndim=3)`` (uint16
for ``I;16``). Both survive a Parquet round trip (the type is kept in the field's extension
metadata; without Ray the column reads as its storage type, a list of bytes plus, when variable,
each row's shape).

Pixel values are kept or refused, never clipped: a 16-bit image (Pillow's ``I;16``, ``I;16B``,
``I;16L``, ``I;16N``, and ``I`` holding 0-65535) becomes 8 bits by value, ``round(v / 257)``
(65535 -> 255), or stays 16 bits under ``mode: I;16``; an 8-bit image under ``I;16`` becomes
``v * 257``. Pillow's own conversion of those modes to ``L`` or ``RGB`` clips at 255 (a 16-bit
picture comes out nearly white). Every other mode is converted with Pillow, as
``transformers.image_utils.load_image`` does (``convert("RGB")``) before a transformers pipeline
sees it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

#: The modes an image is decoded to (``mode``), and their channel counts: grey, grey and alpha,
#: colour, colour and alpha (one uint8 per channel), and 16-bit grey (one uint16).
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1}
#: With ``mode: null``, the mode each file mode is decoded to (a mode not listed is kept: L, LA,
#: RGB, RGBA). Four channels always mean RGBA and two LA, so a model reads them right.
_KEPT_AS = {
    "1": "L",
    "P": "RGB",  # RGBA when the palette has a transparent colour
    "PA": "RGBA",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "La": "LA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
}
#: Pillow's modes of 16-bit grey pixels; ``I`` (32-bit integers) is read as 16 bits when its
#: values are 0-65535.
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageDecodeError(ValueError):
    """A file is not a readable image (not an image, corrupt, truncated, too large).

    A row error, not a config error: the decoding stage's guard applies ``on_error`` to the
    row (names the file and stops the job, or sets the row aside)."""


#: Formats Pillow identifies but cannot decode by itself: stubs that need a handler (BUFR, GRIB,
#: HDF5, WMF), PostScript (needs Ghostscript) and MPEG (identification only).
_NOT_DECODED = {"EPS", "MPEG"}


def image_extensions() -> list[str]:
    """File extensions (lower case, no dot) of every format this Pillow decodes, sorted.

    E.g. ``bmp``, ``gif``, ``jpeg``, ``jpg``, ``png``, ``tif``, ``tiff``, ``webp``...; a folder
    source reads only files with these extensions (a named file is read whatever its name).
    """
    from PIL import Image, ImageFile

    Image.init()  # registers every plugin Pillow ships, not only the common five
    decoded = {
        name
        for name, (factory, _) in Image.OPEN.items()
        if name not in _NOT_DECODED
        and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    extensions = Image.registered_extensions()  # ".jpg" -> "JPEG"
    return sorted({e.lstrip(".").lower() for e, f in extensions.items() if f in decoded})


def check_mode(mode: str | None) -> str | None:
    """``mode`` if images can be decoded to it (:data:`CHANNELS`, or None); else ValueError
    listing the choices."""
    if mode is not None and mode not in CHANNELS:
        raise ValueError(
            f"mode {mode!r} is not one of {', '.join(CHANNELS)} (or null: each file's own, as "
            "L, LA, RGB or RGBA)"
        )
    return mode


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """``size`` as ``(height, width)`` of positive ints, or None; else ValueError."""
    if size is None:
        return None
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be [height, width], two positive integers, not {list(size)}")
    return int(size[0]), int(size[1])


def decode_image(
    data: bytes,
    path: str,
    *,
    mode: str | None = "RGB",
    size: Sequence[int] | None = None,
):
    """Decode one image file's bytes into a ``[height, width, channels]`` numpy array: uint8, or
    uint16 for ``mode="I;16"``.

    Steps, in this order: open and fully decode with Pillow; apply the EXIF orientation
    (``ImageOps.exif_transpose``, so a portrait photo stored sideways comes out upright); convert
    to ``mode`` (see below); resize to ``size = [height, width]`` with Pillow's antialiased
    bilinear filter (after the conversion, so a palette image is filtered as colours, not as
    palette indices).

    Conversion: 16-bit images (:data:`SIXTEEN_BIT`) are scaled to 8 bits by value,
    ``round(v / 257)``, then converted as grey (kept at 16 bits for ``I;16``); 8-bit images are
    converted with Pillow, as ``transformers.image_utils.load_image`` does (CMYK, palette,
    1-bit, LA to RGB; RGBA to RGB drops alpha), and scaled by 257 for ``I;16``. With
    ``mode=None`` L, LA, RGB and RGBA are kept and every other mode converted to the nearest of
    them (:data:`_KEPT_AS`; 16-bit grey to L).

    Raises :class:`ImageDecodeError` naming ``path`` when the bytes are not an image Pillow can
    read, are corrupt or truncated, exceed Pillow's decompression-bomb limit, or hold pixels
    with no 8-bit scale (32-bit float ``F``; ``I`` values outside 0-65535).
    """
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Image.open is lazy: truncated or corrupt pixel data raises only here
        image = ImageOps.exif_transpose(image)
        array = _converted(image, mode, path, size)
    except (ImageDecodeError, MemoryError):
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"cannot decode image file {path}: not an image, or in a format Pillow cannot read"
        ) from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error... on bad files
        detail = " ".join(str(exc).split())[:300]
        raise ImageDecodeError(
            f"cannot decode image file {path}: {type(exc).__name__}: {detail}"
        ) from None
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def _converted(image, mode: str | None, path: str, size: Sequence[int] | None):
    """``image`` in ``mode`` (None: the nearest of L, LA, RGB, RGBA), resized to ``size``, as a
    numpy array (see :func:`decode_image`)."""
    import numpy as np
    from PIL import Image

    if image.mode == "F":
        raise ImageDecodeError(
            f"image file {path} has 32-bit float pixels (mode 'F'), which have no 8-bit or "
            "16-bit scale; convert it to an integer image first"
        )
    if image.mode in SIXTEEN_BIT:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(
                f"image file {path} has 32-bit integer pixels outside 0-65535 (mode 'I'), which "
                "have no 8-bit or 16-bit scale; convert it first"
            )
        deep = values.astype(np.uint16)
        if mode == "I;16":
            return _resized_16(deep, size)
        image = Image.fromarray(((deep.astype(np.uint32) + 128) // 257).astype(np.uint8), "L")
        target = "L" if mode is None else mode
    elif mode == "I;16":
        grey = _resized(image.convert("L") if image.mode != "L" else image, size)
        return np.asarray(grey, dtype=np.uint16) * 257
    elif mode is None:
        target = _KEPT_AS.get(image.mode, image.mode)
        if image.mode == "P" and "transparency" in image.info:
            target = "RGBA"
        if target not in CHANNELS:
            raise ImageDecodeError(
                f"image file {path} has mode {image.mode!r}, which bulkinfer cannot convert to "
                "L, LA, RGB or RGBA; set a mode to convert it to, e.g. RGB"
            )
    else:
        target = mode
    if image.mode != target:
        image = image.convert(target)
    return np.asarray(_resized(image, size), dtype=np.uint8)


def _resized(image, size: Sequence[int] | None):
    """A Pillow image resized to ``size = [height, width]`` (bilinear, antialiased)."""
    from PIL import Image

    if size is None or image.size == (size[1], size[0]):
        return image
    return image.resize((size[1], size[0]), resample=Image.Resampling.BILINEAR)


def _resized_16(values, size: Sequence[int] | None):
    """``[h, w]`` uint16 values resized as :func:`_resized` does, in Pillow's 32-bit mode."""
    import numpy as np
    from PIL import Image

    if size is None or values.shape == (size[0], size[1]):
        return values
    wide = _resized(Image.fromarray(values.astype(np.int32), "I"), size)
    return np.clip(np.asarray(wide), 0, 65535).astype(np.uint16)


def image_column_type(mode: str | None, size: Sequence[int] | None):
    """The Arrow type of the decoded image column (a Ray Data tensor extension type).

    Fixed ``ArrowTensorTypeV2((height, width, channels), uint8)`` when both ``mode`` and
    ``size`` are set, else ``ArrowVariableShapedTensorType(uint8, ndim=3)``; uint16 for
    ``mode="I;16"``.
    """
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorTypeV2, ArrowVariableShapedTensorType

    value = pa.uint16() if mode == "I;16" else pa.uint8()
    if mode is not None and size is not None:
        return ArrowTensorTypeV2((int(size[0]), int(size[1]), CHANNELS[mode]), value)
    return ArrowVariableShapedTensorType(value, 3)


def image_column(images: list[Any], mode: str | None, size: Sequence[int] | None):
    """Decoded arrays as an Arrow array of exactly :func:`image_column_type` (any row count).

    The type does not depend on the rows (a batch whose images happen to share a shape is still
    variable-shaped when ``size`` is unset), so every block of a dataset has the same schema.
    """
    import numpy as np
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray, ArrowVariableShapedTensorArray

    kind = image_column_type(mode, size)
    if not images:
        return pa.ExtensionArray.from_storage(kind, pa.array([], type=kind.storage_type))
    if mode is not None and size is not None:
        return ArrowTensorArray.from_numpy(np.stack(images))
    ragged = np.empty(len(images), dtype=object)
    for i, image in enumerate(images):  # element-wise: np.array would stack equal shapes
        ragged[i] = image
    return ArrowVariableShapedTensorArray.from_numpy(ragged)


def decode_batch(
    table: Any,
    *,
    mode: str | None = "RGB",
    size: Sequence[int] | None = None,
    include_paths: bool = True,
    bytes_column: str = "bytes",
    path_column: str = "path",
):
    """Decode a batch of ``read_binary_files(include_paths=True)`` rows into images.

    ``table``: a pyarrow Table with ``bytes_column`` (binary) and ``path_column`` (string).
    Returns a pyarrow Table with ``image`` (see :func:`image_column_type`) and, when
    ``include_paths``, ``path`` (string), row for row; other input columns (e.g. partition
    fields) are kept after them. Raises :class:`ImageDecodeError` for the first file that does
    not decode (the stage's error guard then retries row by row to isolate it).
    """
    import pyarrow as pa

    paths = table.column(path_column).to_pylist()
    contents = table.column(bytes_column).to_pylist()
    images = [
        decode_image(data, path, mode=mode, size=size)
        for data, path in zip(contents, paths, strict=True)
    ]
    columns: dict[str, Any] = {"image": image_column(images, mode, size)}
    if include_paths:
        columns["path"] = pa.array(paths, pa.string())
    for name in table.column_names:
        if name not in (bytes_column, path_column) and name not in columns:
            columns[name] = table.column(name)
    return pa.table(columns)
