"""Image files for tests and benchmarks, drawn with Pillow (no data set is downloaded).

Two kinds of folder:

* :func:`write_test_images`: a small folder that exercises an image reader: several sizes,
  modes (RGB, L, RGBA, P), formats (JPEG, PNG, WebP), nested folders, a JPEG whose EXIF
  orientation asks for a rotation, a file that is not an image at all and a truncated JPEG.
  It returns what a correct reader must produce for each file.
* :func:`write_benchmark_images`: ``n`` RGB JPEG files of varied sizes in nested folders.

Pictures are smooth gradients with a few shapes, so JPEG and WebP compress them as they would a
photograph (random noise would make files several times larger than real ones).

    bulkinfer-samples test-images FOLDER
    bulkinfer-samples images FOLDER --count 3000
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Pillow's format name for each file extension written here.
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
#: The EXIF tag that holds the orientation (274); 6 means "rotate 90 degrees clockwise to view".
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class SampleImage:
    """One written file and what a reader should make of it.

    ``height``/``width`` are the size after EXIF orientation is applied (what a viewer shows);
    ``mode`` is the Pillow mode stored in the file; ``readable`` is False for the files that
    are not valid images (a reader must name them in its error).
    """

    path: Path
    height: int
    width: int
    mode: str
    readable: bool = True


def picture(height: int, width: int, seed: int) -> np.ndarray:
    """A ``[height, width, 3]`` uint8 RGB picture: a gradient and a rectangle, from ``seed``."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    slope = rng.uniform(-120, 120, size=(2, 3)).astype(np.float32)
    image = base + y[..., None] * slope[0] + x[..., None] * slope[1]
    top, left = rng.integers(0, max(1, height // 2)), rng.integers(0, max(1, width // 2))
    image[top : top + height // 3, left : left + width // 3] = rng.uniform(0, 255, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)


def _pil(array: np.ndarray, mode: str):
    from PIL import Image

    image = Image.fromarray(array, "RGB")
    if mode == "RGB":
        return image
    if mode == "P":
        return image.quantize(colors=16)
    if mode == "RGBA":
        alpha = Image.fromarray(np.linspace(0, 255, array.shape[1], dtype=np.uint8)[None, :])
        image = image.convert("RGBA")
        image.putalpha(alpha.resize((array.shape[1], array.shape[0])))
        return image
    return image.convert(mode)


def write_image(path: Path, height: int, width: int, mode: str = "RGB", seed: int = 0) -> Path:
    """Draw a ``height`` x ``width`` picture in Pillow ``mode`` and save it by its extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = _pil(picture(height, width, seed), mode)
    fmt = FORMATS[path.suffix.lstrip(".").lower()]
    image.save(path, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return path


#: (relative path, height, width, mode) of the readable files of the test folder; names give
#: height x width, as every size in bulkinfer does.
_TEST_FILES = [
    ("rgb_48x64.jpg", 48, 64, "RGB"),
    ("gray_30x40.png", 30, 40, "L"),
    ("a/rgba_32x32.png", 32, 32, "RGBA"),
    ("a/palette_20x50.png", 20, 50, "P"),
    ("a/b/rgb_60x30.webp", 60, 30, "RGB"),
    ("a/b/gray_24x16.jpg", 24, 16, "L"),
    ("a/b/rgba_20x20.webp", 20, 20, "RGBA"),
]


def write_test_images(folder: str | Path) -> list[SampleImage]:
    """Write the reader test folder; return every file with its expected reading, sorted by path.

    Besides the files in ``_TEST_FILES`` it writes ``a/rotated.jpg`` (stored 40 wide x 20 high
    with EXIF orientation 6, so it shows 20 wide x 40 high), ``a/b/not_an_image.jpg`` (text) and
    ``truncated.png`` (the first half of a PNG file).
    """
    from PIL import Image

    folder = Path(folder)
    found = []
    for i, (name, height, width, mode) in enumerate(_TEST_FILES):
        write_image(folder / name, height, width, mode, seed=i)
        found.append(SampleImage(folder / name, height, width, mode))

    rotated = folder / "a" / "rotated.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(picture(20, 40, seed=99)).save(rotated, format="JPEG", exif=exif)
    found.append(SampleImage(rotated, height=40, width=20, mode="RGB"))

    text = folder / "a" / "b" / "not_an_image.jpg"
    text.write_text("this is not an image\n")
    found.append(SampleImage(text, 0, 0, "", readable=False))

    truncated = folder / "truncated.png"
    # 128 x 128: half of it is over 1,000 bytes, as a real image is (a dead letter summarises it).
    whole = write_image(folder / "whole.tmp.png", 128, 128, "RGB", seed=7).read_bytes()
    (folder / "whole.tmp.png").unlink()
    truncated.write_bytes(whole[: len(whole) // 2])
    found.append(SampleImage(truncated, 0, 0, "", readable=False))
    return sorted(found, key=lambda s: str(s.path))


def write_benchmark_images(
    folder: str | Path,
    count: int,
    min_side: int = 160,
    max_side: int = 320,
    per_folder: int = 500,
    seed: int = 0,
) -> list[Path]:
    """``count`` RGB JPEG files (quality 90), sides uniform in [min_side, max_side] pixels.

    Files go into subfolders of ``per_folder`` files each (``000/00000.jpg``...). Deterministic
    for a given ``seed``.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    sides = rng.integers(min_side, max_side + 1, size=(count, 2))
    paths = []
    for i, (height, width) in enumerate(sides):
        path = folder / f"{i // per_folder:03d}" / f"{i:05d}.jpg"
        paths.append(write_image(path, int(height), int(width), "RGB", seed=seed * 1_000_003 + i))
    return paths
