"""Image models offline: tiny transformers and torch models, whole batches as the pipeline does.

Every test here builds or loads a model: marked ``ray`` (the slow tests), though none starts Ray.
"""

from __future__ import annotations

import collections
import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from image_samples import deep_picture, encoded, mode_files
from PIL import Image

from pipeline.contract.errors import DataError
from plugins.predictors._hf_vision import as_rgb, classify, embed, score_function, vector_array
from plugins.predictors._labels import label_arrays, top_labels
from plugins.predictors.image_classification import ImageClassification, ImageClassificationParams
from plugins.predictors.image_embedding import ImageEmbedding, ImageEmbeddingParams
from plugins.predictors.torch_module import TorchModule, TorchModuleParams
from plugins.predictors.torch_modules import ResNet
from plugins.preprocessors.image_ops import ImageTransform, TransformSpec, transform_table
from plugins.samples.images import picture
from plugins.samples.models import IMAGE_LABELS
from plugins.sources.image_decode import decode_batch, image_column

pytestmark = pytest.mark.model  # builds and runs tiny models

#: Images of several sizes, one grey and one with alpha (as the images source decodes them).
IMAGES = [picture(30 + 3 * i, 50 - 2 * i, seed=i) for i in range(4)] + [
    picture(41, 29, seed=20)[:, :, :1],
    np.concatenate([picture(25, 35, seed=21), np.full((25, 35, 1), 128, np.uint8)], axis=2),
]


def _pil(image: np.ndarray) -> Image.Image:
    """The image as a user hands it to the pipeline: a Pillow image of its mode."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[image.shape[2]]
    return Image.fromarray(image[:, :, 0] if mode == "L" else image, mode)


@pytest.fixture(scope="module")
def classifier(image_classifier_folder):
    from transformers import pipeline

    return pipeline("image-classification", model=str(image_classifier_folder), device="cpu")


@pytest.fixture(scope="module")
def encoder(image_encoder_folder):
    from transformers import pipeline

    return pipeline("image-feature-extraction", model=str(image_encoder_folder), device="cpu")


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_batch_labels_equal_the_pipeline_image_by_image(classifier, top_k):
    labels, scores = classify(classifier, IMAGES, top_k=top_k)
    k = min(top_k, len(IMAGE_LABELS))
    assert labels.shape == scores.shape == (len(IMAGES), k) and scores.dtype == np.float32
    for i, image in enumerate(IMAGES):
        alone = classifier(_pil(image), top_k=top_k)
        assert list(labels[i]) == [r["label"] for r in alone]
        np.testing.assert_allclose(scores[i], [r["score"] for r in alone], rtol=1e-5, atol=1e-6)


def test_the_tiny_classifier_gives_different_labels_to_different_images(classifier):
    labels, _ = classify(classifier, IMAGES)
    assert len(collections.Counter(labels[:, 0])) > 1  # else the comparison above proves little


def test_sigmoid_scores_as_the_pipeline_computes_them(classifier):
    labels, scores = classify(classifier, IMAGES[:3], top_k=2, function="sigmoid")
    for i, image in enumerate(IMAGES[:3]):
        alone = classifier(_pil(image), top_k=2, function_to_apply="sigmoid")
        assert list(labels[i]) == [r["label"] for r in alone]
        np.testing.assert_allclose(scores[i], [r["score"] for r in alone], rtol=1e-5)


def test_score_function_follows_the_model_config(classifier):
    config = classifier.model.config
    assert score_function(config) == "softmax"
    assert score_function(config, "none") == "none"
    single = type(config)(num_labels=1)
    assert score_function(single) == "sigmoid"


def test_ties_keep_the_lower_label_first():
    labels, scores = top_labels(np.array([[0.2, 0.4, 0.4]]), {0: "a", 1: "b", 2: "c"}, top_k=2)
    assert labels.tolist() == [["b", "c"]] and scores[0].tolist() == pytest.approx([0.4, 0.4])


def test_arrow_columns_are_strings_and_float32_or_lists_of_them_for_top_k(classifier):
    labels, scores = classify(classifier, IMAGES[:3], top_k=1)
    names, values = label_arrays(labels, scores, 1)
    assert names.type == pa.string() and values.type == pa.float32()
    assert names.to_pylist() == labels[:, 0].tolist()
    labels, scores = classify(classifier, IMAGES[:3], top_k=2)
    names, values = label_arrays(labels, scores, 2)
    assert names.type == pa.list_(pa.string()) and values.type == pa.list_(pa.float32())
    assert names.to_pylist() == labels.tolist()
    vectors = vector_array(np.ones((2, 5)))
    assert vectors.type == pa.list_(pa.float32(), 5) and len(vectors) == 2


def test_batch_vectors_equal_the_pipeline_pooled_output(encoder):
    vectors = embed(encoder, IMAGES)
    assert vectors.shape == (len(IMAGES), 32) and vectors.dtype == np.float32
    for i, image in enumerate(IMAGES):
        alone = np.asarray(encoder(_pil(image), pool=True), dtype=np.float32)[0]
        np.testing.assert_allclose(vectors[i], alone, rtol=1e-4, atol=1e-6)


def test_cls_and_mean_pooling_read_the_last_hidden_state(encoder):
    cls, mean = embed(encoder, IMAGES[:2], "cls"), embed(encoder, IMAGES[:2], "mean")
    tokens = np.asarray(encoder(_pil(IMAGES[0])), dtype=np.float32)[0]  # [tokens, width]
    np.testing.assert_allclose(cls[0], tokens[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mean[0], tokens.mean(axis=0), rtol=1e-4, atol=1e-6)


def files_of_every_mode() -> dict[str, bytes]:
    """CMYK, palette, LA, 1-bit, YCbCr, LAB and 16-bit grey files."""
    deep = encoded(Image.fromarray(deep_picture(24, 36)), "PNG")
    return {**mode_files(), "deep_16_bit.png": deep}


def as_the_pipeline_gets_it(data: bytes) -> Image.Image:
    """The file as a user hands it to the pipeline; a 16-bit one scaled to 8 bits by value
    first, because the pipeline's own ``load_image`` (``convert("RGB")``) clips it at 255."""
    image = Image.open(io.BytesIO(data))
    if image.mode == "I;16":
        scaled = (np.asarray(image).astype(np.uint32) + 128) // 257
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    return image


@pytest.mark.parametrize("mode", ["RGB", None, "I;16"])
def test_the_image_predictors_equal_the_pipeline_on_every_mode(
    image_classifier_folder, image_encoder_folder, classifier, encoder, mode
):
    """Files in every mode through the images source's decoder and the two predictors, as a job
    runs them (``mode: I;16``: the 16-bit file only, the others being colour), each row against
    the pipeline on that file alone."""
    files = files_of_every_mode()
    if mode == "I;16":
        files = {name: data for name, data in files.items() if "16_bit" in name}
    table = decode_batch(pa.table({"bytes": list(files.values()), "path": list(files)}), mode=mode)
    labels = ImageClassification(
        ImageClassificationParams(model=str(image_classifier_folder), top_k=3, device="cpu")
    )(table)
    vectors = ImageEmbedding(ImageEmbeddingParams(model=str(image_encoder_folder), device="cpu"))(
        table
    )
    seen = set()
    for i, data in enumerate(files.values()):
        picture = as_the_pipeline_gets_it(data)
        alone = classifier(picture, top_k=3)
        assert labels.column("label")[i].as_py() == [r["label"] for r in alone]
        np.testing.assert_allclose(
            labels.column("score")[i].as_py(), [r["score"] for r in alone], rtol=1e-5, atol=1e-6
        )
        pooled = np.asarray(encoder(picture, pool=True), dtype=np.float32)[0]
        np.testing.assert_allclose(
            vectors.column("embedding")[i].as_py(), pooled, rtol=1e-4, atol=1e-6
        )
        seen.add(tuple(np.round(pooled, 3)))
    # different pictures, different vectors, so the comparison tells (the two palette files
    # hold the same colours, one with a transparent index that RGB does not show)
    assert len(seen) == len(files) - (mode != "I;16")


def test_as_rgb_matches_pillow_conversion():
    for image in IMAGES[-2:]:
        assert np.array_equal(as_rgb(image), np.asarray(_pil(image).convert("RGB")))
    with pytest.raises(ValueError, match="1-4 channels"):
        as_rgb(np.zeros((2, 2, 5), np.uint8))
    deep = deep_picture(6, 7)[:, :, None]  # 16-bit grey: scaled by value, never clipped
    expected = ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(as_rgb(deep), np.repeat(expected, 3, axis=2))


# -- a torchvision-style ResNet through the torch_module predictor --------------------------------


def test_resnet18_has_torchvisions_parameter_names_and_count():
    model = ResNet()
    names = list(model.state_dict())
    assert names[:2] == ["conv1.weight", "bn1.weight"]
    assert "layer2.0.downsample.0.weight" in names and "layer4.1.bn2.running_var" in names
    assert names[-2:] == ["fc.weight", "fc.bias"]
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's resnet18


def _pixel_table(images):
    """Images as the image source and an image_transform stage hand them on."""
    decoded = pa.table({"image": image_column([as_rgb(i) for i in images], "RGB", None)})
    spec = TransformSpec(resize=36, center_crop=32)
    return transform_table(decoded, ImageTransform(spec)), spec


@pytest.mark.parametrize("source", ["model_file", "state_dict"])
def test_torch_module_runs_the_resnet_on_transformed_images(torch_resnet_files, source):
    table, spec = _pixel_table(IMAGES)
    if source == "model_file":
        params = {"model_file": str(torch_resnet_files["model_file"])}
    else:
        params = {
            "module": "resnet",
            "module_kwargs": {"num_classes": len(IMAGE_LABELS), "width": 8},
            "state_dict": str(torch_resnet_files["state_dict"]),
        }
    stage = TorchModule(
        TorchModuleParams(**params, input_columns=["pixel_values"], output_columns=["logits"])
    )
    out = stage(table)
    logits = np.asarray(out.column("logits").to_pylist(), dtype=np.float32)

    model = ResNet(num_classes=len(IMAGE_LABELS), width=8).eval()
    model.load_state_dict(torch.load(torch_resnet_files["state_dict"], weights_only=True))
    pixels = torch.from_numpy(ImageTransform(spec)([as_rgb(i) for i in IMAGES]))
    with torch.inference_mode():
        expected = model(pixels).numpy()
    assert logits.shape == (len(IMAGES), len(IMAGE_LABELS))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_images_of_different_sizes_are_a_data_error_naming_the_fix(torch_resnet_files):
    ragged = pa.table(
        {"image": image_column([picture(20, 30, 1), picture(25, 25, 2)], "RGB", None)}
    )
    stage = TorchModule(
        TorchModuleParams(model_file=str(torch_resnet_files["model_file"]), input_columns=["image"])
    )
    with pytest.raises(DataError, match="center_crop"):
        stage(ragged)


def test_labels_file_lists_the_classes(torch_resnet_files):
    assert torch_resnet_files["labels"].read_text().split() == list(IMAGE_LABELS)
