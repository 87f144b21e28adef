"""Image files as rows: ``image`` (``[height, width, channels]`` uint8) and ``path``.

The read yields each file's bytes and path (``ray.data.read_binary_files``); the source's
decoder, a map stage run right after it under the ``source.stage`` settings, turns them into
pixels with Pillow (:mod:`plugins.sources.image_decode`). A file that is not a readable image
therefore fails only its own row: by default the job stops with an error naming the file;
``source.stage.on_error: skip`` or ``dead_letter`` sets it aside (counted in the manifest and
``metrics.json``; ``dead_letter`` lists its path in ``<output>/_errors/``), within
``source.stage.max_error_rate``.

Folders are walked recursively for the extensions Pillow decodes (JPEG, PNG, WebP, GIF, BMP,
TIFF, ...); names starting with ``.`` or ``_`` are skipped, as Ray Data does. Work units and
resume are those of every file source: files in sorted order, grouped into units of about
``run.unit_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import Field, field_validator

from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.source import Preview
from pipeline.contract.stage import Preprocessor
from plugins.batches import require_fields, to_arrow
from plugins.sources.files import FileSource, open_input, remote
from plugins.sources.image_decode import (
    check_mode,
    check_size,
    decode_batch,
    image_column_type,
    image_extensions,
)


class ImagesParams(PluginParams):
    path: str | list[str] = Field(
        description="An image file, a folder of them (walked recursively), a list of these, or "
        "any filesystem URI that pyarrow understands (s3://, gs://)."
    )
    size: list[int] | None = Field(
        default=None,
        description="[height, width]: resize every image to this on read (bilinear, "
        "antialiased); null: keep each file's size.",
    )
    mode: str | None = Field(
        default="RGB",
        description="Mode to convert to: RGB (3 channels), L (grey, 1), LA (2), RGBA (4), I;16 "
        "(16-bit grey, uint16); null: each file's own as L, LA, RGB or RGBA (CMYK and palette "
        "images become RGB, 1-bit ones L). 16-bit files are scaled to 8 bits by value.",
    )
    include_paths: bool = Field(default=True, description="Add the file's path as 'path'.")

    @field_validator("size")
    @classmethod
    def _size(cls, size: list[int] | None) -> list[int] | None:
        checked = check_size(size)
        return None if checked is None else list(checked)

    @field_validator("mode")
    @classmethod
    def _mode(cls, mode: str | None) -> str | None:
        return check_mode(mode)


class ImageDecoder(Preprocessor):
    """Decodes the bytes of image files into ``[height, width, channels]`` uint8 arrays."""

    Params = ImagesParams
    libraries: ClassVar[tuple[str, ...]] = ("pillow",)
    default_stage: ClassVar[StageSettings] = StageSettings(
        batch_size=16, batch_format="pyarrow", compute="tasks"
    )

    @classmethod
    def output_schema(cls, params: ImagesParams, schema: Any) -> Any:
        """``image``: ``tensor<uint8>[height, width, channels]`` when ``size`` and ``mode`` are
        set, else variable-shaped (``tensor<uint8>[?, ?, ?]``); ``path``: string (with
        ``include_paths``)."""
        import pyarrow as pa

        require_fields(schema, ["bytes", "path"], key="params.path")
        fields = [pa.field("image", image_column_type(params.mode, params.size))]
        if params.include_paths:
            fields.append(pa.field("path", pa.string()))
        fields += [f for f in schema if f.name not in ("bytes", "path")]
        return pa.schema(fields)

    def __call__(self, batch: Any) -> Any:
        p = self.params
        return decode_batch(
            to_arrow(batch), mode=p.mode, size=p.size, include_paths=p.include_paths
        )


class ImagesSource(FileSource):
    """Read image files (JPEG, PNG, WebP and every format Pillow decodes) into pixel arrays."""

    Params = ImagesParams
    decoder = ImageDecoder
    reader = "read_binary_files"
    libraries: ClassVar[tuple[str, ...]] = ("pillow",)
    extras = {"images": ("PIL",)}

    def extensions(self) -> list[str]:
        """Every extension Pillow decodes (``jpg``, ``png``, ``webp``, ``gif``, ``tif``...)."""
        return image_extensions()

    def file_schema(self, params: ImagesParams, files: list[tuple[str, int]]) -> Any:
        """What the read yields before decoding: ``bytes`` (binary) and ``path`` (string)."""
        import pyarrow as pa

        return pa.schema([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

    def read_files(self, params: ImagesParams, files: list[str]):
        import ray.data

        return ray.data.read_binary_files(
            files, include_paths=True, file_extensions=None, **self.read_options(files)
        )

    def read_file(self, params: ImagesParams, file: str) -> Iterator[Any]:
        """One row: the file's bytes and its path, as Ray Data's ``read_binary_files`` with
        ``include_paths`` gives them."""
        import pyarrow as pa

        with open_input(file) as f:
            data = f.read()
        yield pa.table({"bytes": [data], "path": [file]}, schema=self.schema(params))

    def check_file(self, params: ImagesParams, f: Any) -> None:
        """A read fails only when a file cannot be read at all; decoding is the decoder's."""
        f.read()

    def preview(self, params: ImagesParams, limit: int) -> Preview:
        """The first ``limit`` files as the read yields them (``bytes``, ``path``; not decoded)
        and the exact row count: one row per image file."""
        import pyarrow as pa

        files = [f for f, _ in self.files(params)]
        rows: dict[str, list[Any]] = {"bytes": [], "path": []}
        for file in files[:limit]:
            rows["bytes"].append(remote(lambda file=file: _whole(file), file))
            rows["path"].append(file)
        table = pa.table(rows, schema=self.schema(params))
        return Preview(table, len(files), f"exact: {len(files):,} image file(s), one row each")


def _whole(file: str) -> bytes:
    with open_input(file) as f:
        return f.read()
