"""Every image test that runs a job, on one local Ray for the module (its start-up costs 5-10 s
on this machine): the images source (pixels, sizes and modes, unreadable files named or set
aside, resume), image_classification and image_embedding as PredictorContract subclasses (each
row equal to the transformers pipeline on that image alone), the seed's image experiment end to
end, and the image benchmark's hand-written Ray Data job against its plain loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contracts import PredictorContract, is_string, is_vector
from image_samples import (
    PICTURES,
    ROWS,
    clean_copy,
    deep_picture,
    encoded,
    images_of,
    manifest_of,
    mode_files,
    pipeline_alone,
    write_tree,
)

from pipeline.app.main import run_with_overrides
from pipeline.contract.errors import BulkInferError
from plugins.samples.images import write_image
from plugins.sources.image_decode import decode_image, image_column_type

BASE = ["source=images", "~predictor", "sink=parquet", "run.progress=false"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, list]:
    return write_tree(tmp_path_factory.mktemp("tree"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tree) -> tuple[Path, list]:
    return clean_copy(tree, tmp_path_factory.mktemp("clean") / "images")


# -- source=images ---------------------------------------------------------------------------------


def test_every_image_is_read_upright_at_its_size_as_rgb(ray_session, clean, tmp_path):
    folder, readable = clean
    out = tmp_path / "out"
    result = run_with_overrides([*BASE, f"source.params.path={folder}", f"sink.params.path={out}"])
    assert (result.rows_in, result.rows_out) == (len(readable), len(readable))
    images = images_of(out)
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
    assert {i.shape for i in images_of(out).values()} == {(12, 20, 1)}


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
    images = images_of(out)
    for path, sample in readable:
        assert images[str(path)].shape == (sample.height, sample.width, channels[sample.mode])


def test_every_mode_reaches_the_output_as_transformers_loads_it_16_bits_scaled(
    ray_session, tmp_path
):
    """CMYK, palette, LA, 1-bit, YCbCr, LAB and 16-bit files under the default mode: each
    image equals transformers' ``load_image`` of the file (``convert("RGB")``), but the 16-bit
    one, which is scaled by value where Pillow would clip it."""
    from PIL import Image
    from transformers.image_utils import load_image

    folder = tmp_path / "modes"
    folder.mkdir()
    files = {**mode_files(), "deep.png": encoded(Image.fromarray(deep_picture(24, 36)), "PNG")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "out"
    run_with_overrides([*BASE, f"source.params.path={folder}", f"sink.params.path={out}"])
    images = images_of(out)
    assert len(images) == len(files)
    for name in files:
        image = images[str(folder / name)]
        if name == "deep.png":
            scaled = ((deep_picture(24, 36).astype(np.uint32) + 128) // 257).astype(np.uint8)
            assert np.array_equal(image, np.repeat(scaled[:, :, None], 3, axis=2))
        else:
            assert np.array_equal(image, np.asarray(load_image(str(folder / name)))), name


def test_mode_i16_keeps_16_bits_through_parquet(ray_session, tmp_path):
    from PIL import Image

    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "deep.png").write_bytes(encoded(Image.fromarray(deep_picture(24, 36)), "PNG"))
    out = tmp_path / "out"
    run_with_overrides(
        [*BASE, f"source.params.path={folder}", "source.params.mode='I;16'",
         "source.params.size=[24,36]", f"sink.params.path={out}"]
    )  # fmt: skip
    assert pq.read_table(out).schema.field("image").type == image_column_type("I;16", (24, 36))
    (image,) = images_of(out).values()
    assert image.dtype == np.uint16 and np.array_equal(image[:, :, 0], deep_picture(24, 36))


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
    assert sorted(images_of(out)) == good
    assert manifest_of(out)["rows_set_aside"] == 2
    letters = [json.loads(line) for f in (out / "_errors").glob("*.jsonl") for line in f.open()]
    assert sorted(letter["row"]["path"] for letter in letters) == bad
    for letter in letters:
        assert letter["stage"] == "source" and letter["plugin"] == "images"
        assert f"cannot decode image file {letter['row']['path']}" in letter["error"]
    truncated = next(x for x in letters if x["row"]["path"].endswith("truncated.png"))
    size = Path(truncated["row"]["path"]).stat().st_size
    assert truncated["row"]["bytes"] == f"<{size:,} bytes, not kept>"


def test_a_job_that_failed_on_one_file_resumes_once_the_file_is_fixed(ray_session, tmp_path):
    """One file per unit; the last file is unreadable until it is re-uploaded (same size):
    the resumed run writes what the failed one did not, every image once."""
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
    assert result.rows_resumed + result.rows_done == 4
    assert {p: i.shape for p, i in images_of(out).items()} == {
        **{str(folder / f"{i}.png"): (10 + i, 12, 3) for i in range(3)},
        str(folder / "z_late.png"): (9, 9, 3),
    }


# -- the predictors' contracts -------------------------------------------------------------------


class TestImageClassificationContract(PredictorContract):
    predictor = "image_classification"
    rows = ROWS
    input_column = "image"
    output_types = {"label": is_string, "score": pa.types.is_float32}
    stage = {"concurrency": 1, "batch_size": 4}

    @pytest.fixture(scope="class")
    def params(self, image_classifier_folder):
        return {"model": str(image_classifier_folder)}

    def test_each_label_is_the_pipelines_for_that_imagealone(self, output, image_classifier_folder):
        from transformers import pipeline

        pipe = pipeline("image-classification", model=str(image_classifier_folder), device="cpu")
        got = {r["id"]: (r["label"], r["score"]) for r in output.to_pylist()}
        for i, image in enumerate(PICTURES):
            (best,) = pipeline_alone(pipe, image, top_k=1)
            assert got[i][0] == best["label"]
            assert got[i][1] == pytest.approx(best["score"], rel=1e-5, abs=1e-6)
        assert len({label for label, _ in got.values()}) > 1  # else equality proves little


class TestImageEmbeddingContract(PredictorContract):
    predictor = "image_embedding"
    rows = ROWS
    input_column = "image"
    output_types = {"embedding": lambda kind: is_vector(kind, 32)}
    stage = {"concurrency": 1, "batch_size": 4}

    @pytest.fixture(scope="class")
    def params(self, image_encoder_folder):
        return {"model": str(image_encoder_folder)}

    def test_each_vector_is_the_pipelines_pooled_output_for_that_image(
        self, output, image_encoder_folder
    ):
        from transformers import pipeline

        pipe = pipeline("image-feature-extraction", model=str(image_encoder_folder), device="cpu")
        got = {r["id"]: r["embedding"] for r in output.to_pylist()}
        for i, image in enumerate(PICTURES):
            alone = np.asarray(pipeline_alone(pipe, image, pool=True), dtype=np.float32)[0]
            np.testing.assert_allclose(got[i], alone, rtol=1e-4, atol=1e-6)


# -- the experiment -------------------------------------------------------------------------------


def test_the_image_classification_experiment_labels_every_image_as_the_model_alone_does(
    ray_session, clean, torch_resnet_files, tmp_path
):
    """images -> image_transform tasks -> torch_module ResNet actors -> Parquet, compared with
    decoding, transforming and running the same ResNet on each file by hand."""
    import torch

    from plugins.preprocessors.image_ops import ImageTransform, TransformSpec
    from plugins.samples.models import IMAGE_LABELS

    folder, readable = clean
    model = torch_resnet_files
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
