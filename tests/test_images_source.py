"""source=images: image files in, pixels and paths out; a file that is no image is named or set
aside; work units and resume as for every file source; the seed's image experiment end to end,
and the image benchmark's hand-written Ray Data job against its plain loop (here, on this
module's Ray, rather than with a Ray of its own in tests/test_benchmarks.py: seconds saved)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.__main__ import compose, run_with_overrides
from pipeline.errors import BulkInferError, ConfigError, DataError, EmptyInputError
from pipeline.interfaces import IOContext
from pipeline.plan import describe, plan_job
from pipeline.schema import type_name
from plugins.sources.image_decode import decode_image, image_column_type
from plugins.sources.images import ImageDecoder, ImagesSource
from tools.sample_images import write_image, write_test_images

BASE = ["source=images", "~predictor", "sink=parquet", "run.progress=false"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, list]:
    """The test folder: 8 readable images (sizes, modes, formats, nested, EXIF) + 2 bad files."""
    folder = tmp_path_factory.mktemp("tree")
    return folder, write_test_images(folder)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tree) -> tuple[Path, list]:
    """The same folder without its two unreadable files, plus files a folder read skips."""
    folder = tmp_path_factory.mktemp("clean") / "images"
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


def _images(out: Path) -> dict[str, np.ndarray]:
    """path -> image of a Parquet output (Ray's tensor types are registered by ray.data)."""
    import ray.data  # noqa: F401

    table = pq.read_table(out)
    images = [i for c in table.column("image").chunks for i in c.to_numpy(zero_copy_only=False)]
    return dict(zip(table.column("path").to_pylist(), images, strict=True))


def _manifest(out: Path) -> dict:
    return json.loads((out / "_SUCCESS").read_text())


# -- without Ray: listing, schema, types, the plan ------------------------------------------------


def test_a_folder_is_walked_for_image_files_only(clean):
    folder, readable = clean
    source = ImagesSource()
    params = ImagesSource.Params(path=str(folder))
    assert [Path(f) for f, _ in source.files(params)] == sorted(p for p, _ in readable)
    assert source.schema(params) == pa.schema([("bytes", pa.binary()), ("path", pa.string())])


def test_files_are_grouped_into_work_units_by_size(clean):
    folder, readable = clean
    params = ImagesSource.Params(path=str(folder))
    assert len(ImagesSource().units(params)) == 1
    units = ImagesSource(IOContext(unit_bytes=1)).units(params)
    assert [len(u.spec["files"]) for u in units] == [1] * len(readable)


def test_a_preview_counts_one_row_per_file_exactly(clean):
    folder, readable = clean
    preview = ImagesSource().preview(ImagesSource.Params(path=str(folder)), limit=2)
    assert preview.total_rows == len(readable) and preview.how.startswith("exact")
    first = sorted(p for p, _ in readable)[0]
    assert preview.rows.to_pylist()[0] == {"bytes": first.read_bytes(), "path": str(first)}
    assert preview.rows.num_rows == 2


def test_an_empty_folder_is_refused_before_the_job(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(EmptyInputError, match="no input files"):
        ImagesSource().schema(ImagesSource.Params(path=str(tmp_path)))


def test_the_decoded_columns_are_typed_from_the_params():
    read = pa.schema([("bytes", pa.binary()), ("path", pa.string())])
    fixed = ImageDecoder.output_schema(ImagesSource.Params(path="x", size=[24, 32]), read)
    assert fixed.names == ["image", "path"]
    assert type_name(fixed.field("image").type) == "tensor<uint8>[24, 32, 3]"
    grey = ImagesSource.Params(path="x", size=[24, 32], mode="L", include_paths=False)
    assert type_name(ImageDecoder.output_schema(grey, read).field("image").type) == (
        "tensor<uint8>[24, 32, 1]"
    )
    assert ImageDecoder.output_schema(grey, read).names == ["image"]
    any_size = ImageDecoder.output_schema(ImagesSource.Params(path="x"), read)
    assert type_name(any_size.field("image").type) == "tensor<uint8>[?, ?, ?]"


@pytest.mark.parametrize(
    ("override", "message"),
    [("source.params.size=[0,4]", "two positive integers"), ("source.params.mode=CMYKX", "mode")],
)
def test_bad_params_are_refused_with_their_key(clean, override, message):
    with pytest.raises(ConfigError, match=message) as error:
        plan_job(compose([*BASE, f"source.params.path={clean[0]}", override, "sink.params.path=o"]))
    assert error.value.key.startswith("source.params.")


def test_the_dry_run_plan_shows_the_read_and_the_decoded_columns(clean, tmp_path):
    config = compose(
        [
            "+experiment=image_classification",
            f"source.params.path={clean[0]}",
            f"sink.params.path={tmp_path / 'out'}",
        ]
    )
    text = describe(plan_job(config))
    assert "2. source: decoding rows of 'images'" in text
    assert "columns: image: tensor<uint8>[?, ?, ?], path: string" in text
    assert "columns: pixel_values: tensor<float32>[?, ?, ?], path: string" in text
    assert "label: string, score: float32" in text


def test_a_predictor_fed_file_bytes_is_told_to_decode_them(clean, tmp_path):
    """A parquet column of raw bytes is not an image: the plan says how to get images."""
    path = tmp_path / "bytes.parquet"
    pq.write_table(pa.table({"image": [b"\xff\xd8"]}), path)
    config = compose(
        [
            "source=parquet",
            f"source.params.path={path}",
            "predictor=image_classification",
            "predictor.params.model=unused",
            f"sink.params.path={tmp_path / 'out'}",
        ]
    )
    with pytest.raises(DataError, match="read image files with source=images") as error:
        plan_job(config)
    assert error.value.key == "predictor.params.input_column"


# -- with Ray --------------------------------------------------------------------------------------


def test_every_image_is_read_upright_at_its_size_as_rgb(ray_session, clean, tmp_path):
    folder, readable = clean
    out = tmp_path / "out"
    result = run_with_overrides([*BASE, f"source.params.path={folder}", f"sink.params.path={out}"])
    assert (result.rows_in, result.rows_out) == (len(readable), len(readable))
    images = _images(out)
    assert sorted(images) == sorted(str(p) for p, _ in readable)
    for path, sample in readable:
        image = images[str(path)]
        assert image.shape == (sample.height, sample.width, 3), path  # EXIF rotation applied
        assert np.array_equal(image, decode_image(path.read_bytes(), str(path)))


def test_size_and_mode_give_one_fixed_shape_through_parquet(ray_session, clean, tmp_path):
    folder, readable = clean
    out = tmp_path / "out"
    run_with_overrides(
        [
            *BASE,
            f"source.params.path={folder}",
            "source.params.size=[12,20]",
            "source.params.mode=L",
            f"sink.params.path={out}",
        ]
    )
    assert pq.read_table(out).schema.field("image").type == image_column_type("L", (12, 20))
    assert {i.shape for i in _images(out).values()} == {(12, 20, 1)}


def test_mode_null_keeps_each_files_channels(ray_session, clean, tmp_path):
    folder, readable = clean
    out = tmp_path / "out"
    run_with_overrides(
        [
            *BASE,
            f"source.params.path={folder}",
            "source.params.mode=null",
            f"sink.params.path={out}",
        ]
    )
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 3}  # palette images become RGB
    images = _images(out)
    for path, sample in readable:
        assert images[str(path)].shape == (sample.height, sample.width, channels[sample.mode])


def test_an_unreadable_file_stops_the_job_naming_it(ray_session, tree, tmp_path):
    folder, samples = tree
    out = tmp_path / "out"
    with pytest.raises(BulkInferError) as caught:
        run_with_overrides([*BASE, f"source.params.path={folder}", f"sink.params.path={out}"])
    bad = [str(s.path) for s in samples if not s.readable]
    assert caught.value.key == "source"
    assert "cannot decode image file" in caught.value.message
    assert any(path in caught.value.message for path in bad)
    assert "source.stage.on_error=skip or dead_letter" in caught.value.message
    assert not out.exists()


def test_dead_letter_sets_unreadable_files_aside_and_the_manifest_counts_them(
    ray_session, tree, tmp_path
):
    folder, samples = tree
    out = tmp_path / "out"
    result = run_with_overrides(
        [
            *BASE,
            f"source.params.path={folder}",
            "source.stage.on_error=dead_letter",
            "source.stage.max_error_rate=0.5",
            f"sink.params.path={out}",
        ]
    )
    good = sorted(str(s.path) for s in samples if s.readable)
    bad = sorted(str(s.path) for s in samples if not s.readable)
    assert (result.rows_in, result.rows_out, result.rows_set_aside) == (len(samples), 8, 2)
    assert sorted(_images(out)) == good
    assert _manifest(out)["rows_set_aside"] == 2
    letters = [json.loads(line) for f in (out / "_errors").glob("*.jsonl") for line in f.open()]
    assert sorted(letter["row"]["path"] for letter in letters) == bad
    for letter in letters:
        assert letter["stage"] == "source" and letter["plugin"] == "images"
        assert f"cannot decode image file {letter['row']['path']}" in letter["error"]
    truncated = next(x for x in letters if x["row"]["path"].endswith("truncated.png"))
    size = Path(truncated["row"]["path"]).stat().st_size
    assert truncated["row"]["bytes"] == f"<{size:,} bytes, not kept>"


def test_a_resumed_job_reads_only_the_files_of_unfinished_units(ray_session, tmp_path):
    """One file per unit; the last file is unreadable until it is re-uploaded (same size)."""
    folder = tmp_path / "images"
    for i in range(3):
        write_image(folder / f"{i}.png", 10 + i, 12, seed=i)
    late = write_image(tmp_path / "late.png", 9, 9, seed=5).read_bytes()
    (folder / "z_late.png").write_bytes(b"\0" * len(late))  # being uploaded: not yet an image
    out = tmp_path / "out"
    overrides = [*BASE, f"source.params.path={folder}", f"sink.params.path={out}"]
    overrides.append("run.unit_bytes=1")
    with pytest.raises(BulkInferError, match="z_late.png"):
        run_with_overrides(overrides)
    (folder / "z_late.png").write_bytes(late)
    result = run_with_overrides([*overrides, "run.resume=true"])
    assert (result.units, result.units_skipped) == (4, 3)
    assert {p: i.shape for p, i in _images(out).items()} == {
        **{str(folder / f"{i}.png"): (10 + i, 12, 3) for i in range(3)},
        str(folder / "z_late.png"): (9, 9, 3),
    }


def test_the_image_classification_experiment_labels_every_image_as_the_model_alone_does(
    ray_session, clean, tmp_path
):
    """images -> image_transform tasks -> torch_module ResNet actors -> Parquet, compared with
    decoding, transforming and running the same ResNet on each file by hand."""
    import torch

    from plugins.preprocessors.image_ops import ImageTransform, TransformSpec
    from tools.tiny_models import IMAGE_LABELS, build_torch_resnet

    folder, readable = clean
    model = build_torch_resnet(tmp_path / "resnet")
    out = tmp_path / "out"
    result = run_with_overrides(
        [
            "+experiment=image_classification",
            f"source.params.path={folder}",
            f"predictor.params.model_file={model['model_file']}",
            f"predictor.params.labels={model['labels']}",
            "predictor.stage.batch_size=4",
            f"sink.params.path={out}",
            "run.progress=false",
        ]
    )
    assert result.rows_out == len(readable)
    table = pq.read_table(out)
    assert table.schema == pa.schema(
        [("path", pa.string()), ("label", pa.string()), ("score", pa.float32())]
    )
    got = {r["path"]: (r["label"], r["score"]) for r in table.to_pylist()}

    resnet = torch.jit.load(str(model["model_file"])).eval()
    transform = ImageTransform(TransformSpec())  # resize 256, crop 224, ImageNet mean/std
    for path, _ in readable:
        pixels = transform([decode_image(path.read_bytes(), str(path))])
        with torch.inference_mode():
            scores = torch.softmax(resnet(torch.from_numpy(pixels)), dim=1)[0]
        label, score = got[str(path)]
        assert label == IMAGE_LABELS[int(scores.argmax())]
        assert score == pytest.approx(float(scores.max()), rel=1e-4)


def _script(name: str):
    """A benchmark script as a module (benchmarks/scripts/ is a folder of scripts)."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(name, root / "benchmarks" / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_benchmark_scripts_label_every_image_alike(ray_session, tmp_path):
    """The benchmark's hand-written Ray Data job (Ray's ResNet example style) and its plain loop
    give every generated JPEG the same label."""
    from tools.sample_images import write_benchmark_images
    from tools.tiny_models import build_torch_resnet

    source = tmp_path / "images"
    write_benchmark_images(source, 12, per_folder=5)
    model = build_torch_resnet(tmp_path / "model", num_classes=10)["model_file"]
    labels = {}
    for script, extra in (("plain_images.py", "--batch-size=5"), ("handwritten_images.py", "5")):
        out = tmp_path / script
        _script(script).main([str(source), str(out), str(model), extra])
        table = pq.read_table(out)
        paths, predicted = table.column("path").to_pylist(), table.column("predicted_label")
        labels[script] = dict(zip(paths, predicted.to_pylist(), strict=True))
    assert len(labels["plain_images.py"]) == 12
    assert labels["handwritten_images.py"] == labels["plain_images.py"]
