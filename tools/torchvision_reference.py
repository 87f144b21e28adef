"""Record torchvision.transforms.v2's output for the image_transform test cases.

``plugins/preprocessors/image_ops.py`` computes torchvision v2's ``Resize``, ``CenterCrop``,
``ToDtype(scale=True)`` and ``Normalize`` with torch's own kernels, because torchvision cannot be
installed beside this project's CPU build of torch. This script runs the real torchvision on the
cases of :func:`cases` and saves its outputs to ``tests/data/image_transform_reference.npz``; the
tests compare image_ops against that file. Run it where torchvision 0.28 (the release for torch
2.13) imports, outside the project's environment:

    pip install --no-deps --target /tmp/tv torchvision==0.28.0
    PYTHONPATH=/tmp/tv python -m tools.torchvision_reference --define-missing-ops

``--define-missing-ops``: PyPI's torchvision 0.28.0 is a CUDA build; beside the CPU torch its C++
extension does not load (``libc10_cuda.so: cannot open shared object file``) and its import then
fails in ``_meta_registrations.py`` with "operator torchvision::nms does not exist". The flag
declares the schemas of the two operators that module registers unconditionally (``nms`` and
``qnms``; no kernel), after which torchvision imports and its transforms, which are pure torch,
run. Never use this in the project's own code: detection ops and ``torchvision.io`` still fail.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "image_transform_reference.npz"


def images() -> list[np.ndarray]:
    """The test images: ``[h, w, c]`` uint8 of several shapes, 3 and 1 channels."""
    from plugins.samples.images import picture

    rgb = [picture(h, w, seed=i) for i, (h, w) in enumerate([(37, 53), (64, 48), (20, 20)])]
    grey = picture(45, 31, seed=9).mean(axis=2, keepdims=True).astype(np.uint8)
    return [*rgb, grey]


#: name -> TransformSpec keyword arguments (image_ops) mirrored by :func:`torchvision_pipeline`.
CASES: dict[str, dict] = {
    "imagenet_preset": {"resize": 32, "center_crop": 24},
    "exact_resize": {"resize": [30, 40], "center_crop": None},
    "crop_larger_than_image": {"resize": None, "center_crop": [50, 41]},
    "bicubic_no_antialias": {
        "resize": 28,
        "center_crop": 20,
        "interpolation": "bicubic",
        "antialias": False,
    },
    "bicubic": {"resize": 28, "center_crop": 20, "interpolation": "bicubic"},
    "nearest_no_norm": {
        "resize": 16,
        "center_crop": 16,
        "interpolation": "nearest",
        "mean": None,
        "std": None,
    },
    "upscale": {"resize": 90, "center_crop": 80},
}


def torchvision_pipeline(case: dict, channels: int):
    """The torchvision v2 Compose equivalent to one case (for ``channels``-channel images)."""
    import torch
    from torchvision.transforms import v2

    steps = [v2.ToImage()]
    mode = {
        "bilinear": v2.InterpolationMode.BILINEAR,
        "bicubic": v2.InterpolationMode.BICUBIC,
        "nearest": v2.InterpolationMode.NEAREST,
    }[case.get("interpolation", "bilinear")]
    if case.get("resize") is not None:
        steps.append(v2.Resize(case["resize"], mode, antialias=case.get("antialias", True)))
    if case.get("center_crop") is not None:
        steps.append(v2.CenterCrop(case["center_crop"]))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    mean = case.get("mean", (0.485, 0.456, 0.406))
    if mean is not None:
        std = case.get("std", (0.229, 0.224, 0.225))
        steps.append(v2.Normalize(list(mean)[:channels], list(std)[:channels]))
    return v2.Compose(steps)


def define_missing_ops() -> None:
    """Declare ``torchvision::nms``/``qnms`` so torchvision imports without its C++ extension."""
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    define_missing_ops.library = library  # keep the registration alive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--define-missing-ops", action="store_true")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.define_missing_ops:
        define_missing_ops()
    import torch
    import torchvision

    arrays: dict[str, np.ndarray] = {}
    for name, case in CASES.items():
        for i, image in enumerate(images()):
            out = torchvision_pipeline(case, image.shape[2])(image)
            arrays[f"{name}/{i}"] = out.numpy()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.output,
        torchvision_version=np.array(torchvision.__version__),
        torch_version=np.array(torch.__version__),
        cpu_capability=np.array(torch.backends.cpu.get_cpu_capability()),
        **arrays,
    )
    print(f"wrote {len(arrays)} outputs of torchvision {torchvision.__version__} to {args.output}")


if __name__ == "__main__":
    main()
