"""source=images without Ray: the files a folder read lists, work units, the preview, the
decoded columns' types, refused params and the plan. The jobs are in tests/test_image_jobs.py."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from image_samples import clean_copy, write_tree

from pipeline.app.main import compose
from pipeline.contract.errors import ConfigError, DataError, EmptyInputError
from pipeline.contract.plugin import IOContext
from pipeline.contract.schema import type_name
from pipeline.plan.planner import plan_job
from pipeline.plan.report import describe
from plugins.sources.images import ImageDecoder, ImagesSource

BASE = ["source=images", "~predictor", "sink=parquet", "run.progress=false"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, list]:
    """The generated tree without its two unreadable files, plus files a folder read skips."""
    tree = write_tree(tmp_path_factory.mktemp("tree"))
    return clean_copy(tree, tmp_path_factory.mktemp("clean") / "images")


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


@pytest.mark.model
def test_the_dry_run_plan_shows_the_read_and_the_decoded_columns(clean, tmp_path):
    from plugins.samples.models import build_torch_resnet

    model = build_torch_resnet(tmp_path / "tiny-resnet")  # the plan checks its files exist
    config = compose(
        [
            "+experiment=image_classification",
            f"source.params.path={clean[0]}",
            f"predictor.params.model_file={model['model_file']}",
            f"predictor.params.labels={model['labels']}",
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
