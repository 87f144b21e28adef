"""Decoding image files into pixel arrays (Pillow), one file at a time or a batch of them.

The ``images`` source reads files as bytes (``ray.data.read_binary_files``) and decodes them in
a map stage right after the read, so that a file that is not a readable image fails only its own
row: the stage's error policy then names it, skips it or sets it aside, instead of Ray's
``read_images`` failing the whole read task.

A decoded image is a ``[height, width, channels]`` uint8 array, channels last, 1 for ``L``, 3
for ``RGB``, 4 for ``RGBA``. The image column is one of Ray Data's tensor extension types:
``ArrowTensorTypeV2((height, width, channels), uint8)`` when every image has the same shape
(``size`` and ``mode`` both set), else ``ArrowVariableShapedTensorType(uint8, ndim=3)``. Both
survive a Parquet round trip (the type is kept in the field's extension metadata; without Ray
the column reads as its storage type, a list of bytes plus, when variable, each row's shape).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

#: Modes whose pixels are one uint8 per channel: their channel counts.
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3, "LAB": 3, "HSV": 3}
#: Modes a file may be stored in that become uint8 pixels only through a conversion.
_CONVERT_WHEN_KEPT = {"1": "L", "P": "RGB", "PA": "RGBA", "I;16": None, "I": None, "F": None}


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
    """``mode`` if it yields uint8 pixels (or is None); else ValueError listing the choices."""
    if mode is not None and mode not in CHANNELS:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(CHANNELS)} (or null)")
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
    """Decode one image file's bytes into a ``[height, width, channels]`` uint8 numpy array.

    Steps, in this order: open and fully decode with Pillow; apply the EXIF orientation
    (``ImageOps.exif_transpose``, so a portrait photo stored sideways comes out upright); convert
    to ``mode`` (Pillow's conversion, e.g. palette or grey to RGB; RGBA to RGB drops alpha);
    resize to ``size = [height, width]`` with Pillow's antialiased bilinear filter (after the
    conversion, so a palette image is filtered as colours, not as palette indices).

    With ``mode=None`` the file's own mode is kept when it is one uint8 per channel (L, RGB,
    RGBA...); 1-bit images become L, palette images RGB (or RGBA with transparency); 16-bit and
    float images raise, asking for a ``mode`` (Pillow's conversion of those clips to 0-255, it
    does not rescale).

    Raises :class:`ImageDecodeError` naming ``path`` when the bytes are not an image Pillow can
    read, are corrupt or truncated, or exceed Pillow's decompression-bomb limit.
    """
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Image.open is lazy: truncated or corrupt pixel data raises only here
        image = ImageOps.exif_transpose(image)
        image = _converted(image, mode, path)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), resample=Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
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


def _converted(image, mode: str | None, path: str):
    """``image`` in ``mode``, or with ``mode=None`` in the nearest mode of uint8 channels."""
    target = mode
    if target is None and image.mode not in CHANNELS:
        target = _CONVERT_WHEN_KEPT.get(image.mode)
        if image.mode == "P" and "transparency" in image.info:
            target = "RGBA"
        if target is None:
            raise ImageDecodeError(
                f"image file {path} has mode {image.mode!r} (not 8 bits per channel); set a "
                f"mode to convert it to, e.g. RGB or L"
            )
    return image.convert(target) if target is not None and image.mode != target else image


def image_column_type(mode: str | None, size: Sequence[int] | None):
    """The Arrow type of the decoded image column (a Ray Data tensor extension type).

    Fixed ``ArrowTensorTypeV2((height, width, channels), uint8)`` when both ``mode`` and
    ``size`` are set, else ``ArrowVariableShapedTensorType(uint8, ndim=3)``.
    """
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorTypeV2, ArrowVariableShapedTensorType

    if mode is not None and size is not None:
        return ArrowTensorTypeV2((int(size[0]), int(size[1]), CHANNELS[mode]), pa.uint8())
    return ArrowVariableShapedTensorType(pa.uint8(), 3)


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
