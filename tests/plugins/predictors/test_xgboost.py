"""The xgboost predictor: a booster trained here, and the seed's Ray Train checkpoint flow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost
from contracts import PredictorContract, run_job

from pipeline.app.main import run_with_overrides
from pipeline.contract.errors import ColumnNotFoundError, DataError
from plugins.predictors.xgboost_model import XGBoostParams, XGBoostPredictor
from plugins.predictors.xgboost_train import LABEL, breast_cancer_frames

TRAIN, VALID = breast_cancer_frames()
FEATURES = [c for c in TRAIN.columns if c != LABEL]
ROWS = [{"id": i, **row} for i, row in enumerate(VALID.head(40).to_dict("records"))]


@pytest.fixture(scope="module")
def booster_file(tmp_path_factory):
    """A booster trained on the breast-cancer data (feature names kept), saved as .ubj."""
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(TRAIN[FEATURES], label=TRAIN[LABEL]),
        num_boost_round=10,
    )
    path = tmp_path_factory.mktemp("xgb") / "model.ubj"
    booster.save_model(path)
    return path


def _expected(path, rows) -> dict[int, float]:
    booster = xgboost.Booster(model_file=str(path))
    matrix = np.array([[row[c] for c in FEATURES] for row in rows], dtype=np.float32)
    predictions = booster.predict(xgboost.DMatrix(matrix, feature_names=FEATURES))
    return {row["id"]: float(p) for row, p in zip(rows, predictions, strict=True)}


class TestXGBoostContract(PredictorContract):
    predictor = "xgboost"
    rows = ROWS
    input_column = "mean radius"
    output_types = {"predictions": pa.types.is_float32}
    stage = {"concurrency": 2, "batch_format": "pandas", "batch_size": 16}

    @pytest.fixture(scope="class")
    def params(self, booster_file):
        return {"model": str(booster_file)}

    def test_predictions_equal_booster_predict_row_for_row(self, output, booster_file):
        got = dict(
            zip(
                output.column("id").to_pylist(),
                output.column("predictions").to_pylist(),
                strict=True,
            )
        )
        assert got == _expected(booster_file, ROWS)


@pytest.mark.parametrize("batch_format", ["numpy", "pyarrow"])
def test_numpy_and_arrow_batches_predict_the_same(
    ray_session, booster_file, tmp_path, batch_format
):
    job = {
        "type": "xgboost",
        "params": {"model": str(booster_file)},
        "stage": {"batch_format": batch_format, "batch_size": 7},
    }
    out = run_job(job, ROWS, tmp_path / "out")
    got = dict(
        zip(out.column("id").to_pylist(), out.column("predictions").to_pylist(), strict=True)
    )
    assert got == _expected(booster_file, ROWS)


def test_features_follow_the_model_order_not_the_data_order(booster_file):
    predictor = XGBoostPredictor(XGBoostParams(model=str(booster_file)))
    shuffled = pa.Table.from_pylist(ROWS).select(["id", *reversed(FEATURES)])
    assert predictor.features(shuffled.column_names) == FEATURES
    got = predictor(shuffled).column("predictions").to_pylist()
    assert got == list(_expected(booster_file, ROWS).values())


def test_a_model_without_feature_names_uses_the_columns_left_after_exclusions(tmp_path):
    booster = xgboost.train(
        {"objective": "reg:squarederror", "nthread": 1},
        xgboost.DMatrix(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), label=[1.0, 2.0, 3.0]),
        num_boost_round=3,
    )
    booster.save_model(tmp_path / "plain.json")
    table = pa.table({"id": [1, 2], "a": [0.0, 2.0], "b": [1.0, 2.0]})
    params = XGBoostParams(model=str(tmp_path / "plain.json"), exclude_columns=["id"])
    got = XGBoostPredictor(params)(table).column("predictions").to_pylist()
    expected = booster.predict(xgboost.DMatrix(np.array([[0.0, 1.0], [2.0, 2.0]])))
    assert got == [float(p) for p in expected]
    with pytest.raises(DataError, match="takes 2 features"):
        XGBoostPredictor(XGBoostParams(model=str(tmp_path / "plain.json")))(table)


def test_missing_model_and_bad_checkpoint_folder_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        XGBoostPredictor(XGBoostParams(model=str(tmp_path / "nope.ubj")))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "other.txt").write_text("x")
    with pytest.raises(DataError, match="without model.ubj"):
        XGBoostPredictor(XGBoostParams(model=str(tmp_path / "ckpt")))


def test_explicit_feature_columns_are_checked_before_the_job(ray_session, booster_file, tmp_path):
    job = {
        "type": "xgboost",
        "params": {"model": str(booster_file), "feature_columns": ["mean radius", "nope"]},
    }
    with pytest.raises(ColumnNotFoundError) as error:
        run_job(job, ROWS, tmp_path / "out")
    assert error.value.key == "predictor.params.feature_columns"


def test_seed_flow_ray_train_checkpoint_then_batch_prediction(ray_session, tmp_path):
    """Train with Ray Train (current API), then the seed's experiment on its checkpoint."""
    from ray.train import Checkpoint
    from ray.train.xgboost import RayTrainReportCallback

    from plugins.predictors.xgboost_train import train

    trained = train(tmp_path / "breast_cancer", num_workers=1, num_boost_round=2)
    assert (trained / "checkpoint" / "model.ubj").is_file()
    run_with_overrides(
        [
            "+experiment=xgboost_checkpoint",
            f"source.params.path={trained}/valid.csv",
            f"predictor.params.model={trained}/checkpoint",
            "sink=parquet",
            "~sink.params.limit",
            f"sink.params.path={tmp_path}/predictions",
            "run.progress=false",
        ]
    )
    out = pq.read_table(tmp_path / "predictions").to_pandas()
    assert len(out) == len(VALID) and LABEL not in out.columns
    booster = RayTrainReportCallback.get_model(
        Checkpoint.from_directory(str(trained / "checkpoint"))
    )
    expected = booster.predict(xgboost.DMatrix(out[FEATURES]))
    np.testing.assert_array_equal(out["predictions"].to_numpy(), expected)


# -- the predictions' type, read from the booster before the job --------------------------------

_X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
_CLASSES = np.random.default_rng(1).integers(0, 3, 60)
#: objective -> (training params besides the objective, labels, values per row by predict_type)
OBJECTIVES = {
    "reg:squarederror": ({}, _X[:, 0], {"value": 1, "margin": 1}),
    "binary:logistic": ({}, (_X[:, 0] > 0).astype(float), {"value": 1, "margin": 1}),
    "count:poisson": ({}, np.abs(np.round(_X[:, 0] * 3)), {"value": 1, "margin": 1}),
    "multi:softprob": ({"num_class": 3}, _CLASSES, {"value": 3, "margin": 3}),
    "multi:softmax": ({"num_class": 3}, _CLASSES, {"value": 1, "margin": 3}),
    "reg:quantileerror": ({"quantile_alpha": [0.1, 0.9]}, _X[:, 0], {"value": 2, "margin": 2}),
    "reg:pseudohubererror": (
        {"multi_strategy": "multi_output_tree"},
        _X[:, :2],
        {"value": 2, "margin": 2},
    ),
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("predict_type", ["value", "margin"])
def test_the_prediction_type_is_declared_from_the_booster_and_kept_in_every_batch_format(
    tmp_path, objective, predict_type
):
    from pipeline.contract.batches import to_table

    extra, labels, widths = OBJECTIVES[objective]
    booster = xgboost.train(
        {"objective": objective, "nthread": 1, "max_depth": 2, **extra},
        xgboost.DMatrix(_X, label=labels),
        num_boost_round=2,
    )
    booster.save_model(tmp_path / "model.ubj")
    params = XGBoostParams(model=str(tmp_path / "model.ubj"), predict_type=predict_type)
    features = pa.table({f"f{i}": _X[:5, i] for i in range(4)})
    declared = XGBoostPredictor.output_schema(params, features.schema).field("predictions").type
    width = widths[predict_type]
    assert declared == (pa.float32() if width == 1 else pa.list_(pa.float32(), width))

    expected = booster.inplace_predict(_X[:5], predict_type=predict_type).tolist()
    predictor = XGBoostPredictor(params)
    batches = {
        "pyarrow": features,
        "pandas": features.to_pandas(),
        "numpy": {name: features.column(name).to_numpy() for name in features.column_names},
    }
    for batch_format, batch in batches.items():
        column = to_table(predictor(batch)).column("predictions")
        assert column.type == declared, batch_format
        assert column.to_pylist() == expected, batch_format


def test_a_checkpoint_folder_is_typed_without_ray_and_a_missing_model_is_refused(tmp_path):
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 3, "nthread": 1},
        xgboost.DMatrix(_X, label=_CLASSES),
        num_boost_round=1,
    )
    (tmp_path / "checkpoint").mkdir()
    booster.save_model(tmp_path / "checkpoint" / "model.ubj")
    schema = pa.schema([(f"f{i}", pa.float32()) for i in range(4)])
    params = XGBoostParams(model=str(tmp_path / "checkpoint"))
    typed = XGBoostPredictor.output_schema(params, schema)
    assert typed.field("predictions").type == pa.list_(pa.float32(), 3)
    with pytest.raises(DataError, match="model path does not exist") as caught:
        XGBoostPredictor.output_schema(XGBoostParams(model=str(tmp_path / "nope")), schema)
    assert caught.value.key == "params.model"
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(DataError, match="cannot load XGBoost model"):
        XGBoostPredictor.output_schema(XGBoostParams(model=str(tmp_path / "notes.json")), schema)
