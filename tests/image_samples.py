"""Shared by the image tests: small pictures as inline rows, the generated image tree, and
readers of a job's Parquet output. Models and folders are built by each module's fixtures."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from plugins.samples.images import picture, write_image, write_test_images

#: Small pictures of several sizes, one grey ([h, w, 1]); as inline rows they are nested lists.
PICTURES = [picture(12 + 2 * i, 16 - i, seed=i) for i in range(5)] + [picture(14, 10, 9)[:, :, :1]]
ROWS = [{"id": i, "image": p.tolist()} for i, p in enumerate(PICTURES)]


def pipeline_alone(pipe, image: np.ndarray, **kwargs):
    """What the transformers pipeline gives for one image, handed over as a Pillow image."""
    from PIL import Image

    pil = Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image)
    return pipe(pil, **kwargs)


def write_tree(folder: Path) -> tuple[Path, list]:
    """The test folder: 8 readable images (sizes, modes, formats, nested, EXIF) + 2 bad files."""
    return folder, write_test_images(folder)


def clean_copy(tree: tuple[Path, list], folder: Path) -> tuple[Path, list]:
    """``tree`` copied to ``folder`` without its two unreadable files, plus files a folder read
    skips; returns ``(folder, [(copied path, sample), ...])`` for the readable images."""
    shutil.copytree(tree[0], folder)
    readable = []
    for sample in tree[1]:
        copy = folder / sample.path.relative_to(tree[0])
        if sample.readable:
            readable.append((copy, sample))
        else:
            copy.unlink()
    (folder / "notes.txt").write_text("not read: no image extension\n")
    write_image(folder / "_hidden" / "skipped.png", 8, 8)  # Ray Data skips _ and . names
    return folder, readable


def images_of(out: Path) -> dict[str, np.ndarray]:
    """path -> image of a Parquet output (Ray's tensor types are registered by ray.data)."""
    import ray.data  # noqa: F401

    table = pq.read_table(out)
    images = [i for c in table.column("image").chunks for i in c.to_numpy(zero_copy_only=False)]
    return dict(zip(table.column("path").to_pylist(), images, strict=True))


def manifest_of(out: Path) -> dict:
    return json.loads((out / "_SUCCESS").read_text())


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    """``image`` saved in ``fmt`` (a file's bytes)."""
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def deep_picture(height: int, width: int) -> np.ndarray:
    """A 16-bit grey picture over the whole range 0-65535 (a gradient)."""
    ramp = np.linspace(0, 65535, height * width).round().astype(np.uint16)
    return ramp.reshape(height, width)


def mode_files() -> dict[str, bytes]:
    """Image files (name -> bytes) stored in modes other than L, RGB and RGBA: CMYK, palette
    (with and without a transparent colour), LA, 1-bit, YCbCr and LAB."""
    rgb = Image.fromarray(picture(24, 36, seed=5))
    return {
        "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG", quality=95),
        "palette.png": encoded(rgb.quantize(colors=16), "PNG"),
        "palette_transparent.png": encoded(rgb.quantize(colors=16), "PNG", transparency=2),
        "grey_alpha.png": encoded(rgb.convert("LA"), "PNG"),
        "one_bit.png": encoded(rgb.convert("1"), "PNG"),
        "cmyk.tif": encoded(rgb.convert("CMYK"), "TIFF"),
        "ycbcr.tif": encoded(rgb.convert("YCbCr"), "TIFF"),
        "lab.tif": encoded(rgb.convert("LAB"), "TIFF"),
    }
