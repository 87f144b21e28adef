"""image_classification and image_embedding without Ray: tiny transformers models built from
configs, loaded as a hub model is; top_k as the pipeline orders it, output schemas, refusals.
torch_module with a labels file: label and score columns from a ResNet's logits. The
PredictorContract jobs are in tests/test_image_jobs.py."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from image_samples import PICTURES, pipeline_alone

from pipeline.contract.errors import ColumnNotFoundError, ConfigError, DataError
from pipeline.plan.validation import validate_model
from plugins.predictors.image_classification import ImageClassification
from plugins.predictors.image_embedding import ImageEmbedding
from plugins.predictors.torch_module import TorchModule, TorchModuleParams
from plugins.preprocessors.image_transform import ImageTransformStage
from plugins.samples.models import IMAGE_LABELS
from plugins.sources.image_decode import image_column

# Those that load a model are marked ray: they belong with the slow tests.


def _table(images) -> pa.Table:
    return pa.table({"image": image_column(list(images), "RGB", None)})


def _params(plugin, **params):
    return validate_model(plugin.Params, params, "predictor.params")


@pytest.mark.model
def test_top_k_gives_lists_as_the_pipeline_orders_them(image_classifier_folder):
    from transformers import pipeline

    stage = ImageClassification(
        _params(ImageClassification, model=str(image_classifier_folder), top_k=3)
    )
    out = stage(_table(PICTURES[:3]))
    pipe = pipeline("image-classification", model=str(image_classifier_folder), device="cpu")
    for i, image in enumerate(PICTURES[:3]):
        alone = pipeline_alone(pipe, image, top_k=3)
        assert out.column("label")[i].as_py() == [r["label"] for r in alone]
        np.testing.assert_allclose(
            out.column("score")[i].as_py(), [r["score"] for r in alone], rtol=1e-5, atol=1e-6
        )


@pytest.mark.model
def test_output_schemas_follow_the_params(image_classifier_folder, image_encoder_folder):
    schema = pa.schema([("image", image_column([], "RGB", None).type)])
    one = ImageClassification.output_schema(_params(ImageClassification, model="m"), schema)
    assert (one.field("label").type, one.field("score").type) == (pa.string(), pa.float32())
    embed = _params(ImageEmbedding, model=str(image_encoder_folder))
    assert ImageEmbedding.output_schema(embed, schema).field("embedding").type == pa.list_(
        pa.float32(), 32
    )
    hub = _params(ImageEmbedding, model="some/hub-model")  # not a local folder: length unknown
    assert ImageEmbedding.output_schema(hub, schema).field("embedding").type == pa.list_(
        pa.float32()
    )


def test_a_column_that_holds_no_images_is_refused_before_the_model_loads():
    text = pa.schema([("image", pa.string())])
    with pytest.raises(DataError, match="holds string values; image classifiers need images"):
        ImageClassification.output_schema(_params(ImageClassification, model="m"), text)
    with pytest.raises(ColumnNotFoundError, match="'picture'"):
        ImageEmbedding.output_schema(
            _params(ImageEmbedding, model="m", input_column="picture"), text
        )


@pytest.mark.model
def test_normalize_gives_unit_vectors(image_encoder_folder):
    stage = ImageEmbedding(_params(ImageEmbedding, model=str(image_encoder_folder), normalize=True))
    vectors = np.asarray(stage(_table(PICTURES[:3])).column("embedding").to_pylist())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.model  # imports transformers' pipeline: seconds
def test_a_model_folder_that_is_not_there_is_named(tmp_path):
    with pytest.raises(DataError, match="cannot load model") as error:
        ImageClassification(_params(ImageClassification, model=str(tmp_path / "missing")))
    assert error.value.key == "params.model"


def test_remote_code_is_refused():
    with pytest.raises(ConfigError, match="trust_remote_code"):
        _params(ImageClassification, model="m", model_kwargs={"trust_remote_code": True})


def test_image_transform_declares_fixed_tensors_for_fixed_images():
    from ray.data.extensions import ArrowTensorTypeV2

    fixed = pa.schema([("image", image_column([], "RGB", (40, 30)).type), ("path", pa.string())])
    params = validate_model(ImageTransformStage.Params, {"resize": 32}, "p")
    out = ImageTransformStage.output_schema(params, fixed)
    assert out.names == ["pixel_values", "path"]  # in the image's place
    assert out.field("pixel_values").type == ArrowTensorTypeV2((3, 224, 224), pa.float32())
    keep = validate_model(ImageTransformStage.Params, {"drop_input": False}, "p")
    assert ImageTransformStage.output_schema(keep, fixed).names == ["image", "path", "pixel_values"]
    with pytest.raises(ConfigError, match="mean has 3 values but std 1"):
        validate_model(ImageTransformStage.Params, {"std": [0.5]}, "p")


# -- torch_module with a labels file ------------------------------------------------------------


def _pixels(images) -> pa.Table:
    stage = ImageTransformStage(
        validate_model(ImageTransformStage.Params, {"resize": 36, "center_crop": 32}, "p")
    )
    return stage(_table(images))


def _logits(torch_resnet_files, table) -> np.ndarray:
    model = torch.jit.load(str(torch_resnet_files["model_file"])).eval()
    pixels = np.stack(table.column("pixel_values").chunk(0).to_numpy(zero_copy_only=False))
    with torch.inference_mode():
        return model(torch.from_numpy(pixels)).numpy()


@pytest.mark.model
@pytest.mark.parametrize("top_k", [1, 3])
def test_torch_module_writes_labels_and_softmax_scores(torch_resnet_files, top_k):
    table = _pixels(PICTURES[:5])  # colour pictures (the images source's default mode: RGB)
    stage = TorchModule(
        TorchModuleParams(
            model_file=str(torch_resnet_files["model_file"]),
            input_columns=["pixel_values"],
            labels=str(torch_resnet_files["labels"]),
            top_k=top_k,
        )
    )
    out = stage(table)
    probabilities = torch.softmax(
        torch.from_numpy(_logits(torch_resnet_files, table)), dim=1
    ).numpy()
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    names = [[IMAGE_LABELS[j] for j in row] for row in order]
    best = np.take_along_axis(probabilities, order, axis=1)
    if top_k == 1:
        assert out.schema.field("label").type == pa.string()
        assert out.column("label").to_pylist() == [n[0] for n in names]
        np.testing.assert_allclose(out.column("score").to_numpy(), best[:, 0], rtol=1e-5)
    else:
        assert out.column("label").to_pylist() == names
        np.testing.assert_allclose(out.column("score").to_pylist(), best, rtol=1e-5)
    declared = TorchModule.output_schema(stage.params, table.schema)
    assert declared.field("label").type == out.schema.field("label").type
    assert "predictions" not in out.column_names


@pytest.mark.model
def test_torch_module_labels_file_must_name_every_class(torch_resnet_files, tmp_path):
    short = tmp_path / "labels.json"
    short.write_text(json.dumps(["cat", "dog"]))
    stage = TorchModule(
        TorchModuleParams(
            model_file=str(torch_resnet_files["model_file"]),
            input_columns=["pixel_values"],
            labels=str(short),
        )
    )
    with pytest.raises(DataError, match="gives 4 classes but the labels file names 2"):
        stage(_pixels(PICTURES[:2]))
    with pytest.raises(DataError, match="labels file does not exist") as error:
        TorchModule(
            TorchModuleParams(
                model_file=str(torch_resnet_files["model_file"]),
                input_columns=["pixel_values"],
                labels=str(tmp_path / "none.txt"),
            )
        )
    assert error.value.key == "params.labels"


def test_torch_module_label_params_need_a_labels_file():
    with pytest.raises(ValueError, match="top_k goes with labels"):
        TorchModuleParams(model_file="m.pt", input_columns=["x"], top_k=3)
    with pytest.raises(ValueError, match="leave output_columns out"):
        TorchModuleParams(
            model_file="m.pt", input_columns=["x"], labels="l.txt", output_columns=["y"]
        )


def test_labels_files_in_json_forms(tmp_path):
    from plugins.predictors._labels import read_labels

    (tmp_path / "a.json").write_text(json.dumps({"1": ["n02", "dog"], "0": ["n01", "cat"]}))
    assert read_labels(str(tmp_path / "a.json"), "k") == ["cat", "dog"]
    (tmp_path / "b.json").write_text(json.dumps({"0": "cat", "2": "fish"}))
    with pytest.raises(DataError, match="not the class indexes"):
        read_labels(str(tmp_path / "b.json"), "k")
