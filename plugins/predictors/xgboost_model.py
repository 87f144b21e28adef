"""XGBoost predictions from a model file or a Ray Train checkpoint folder (no torch import)."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeline.contract.errors import ColumnNotFoundError, DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins.batches import added, require_columns, require_fields, to_arrow, with_column
from plugins.models import choose_device, ray_gpu_ids

KEY = "predictor.params"
#: The file RayTrainReportCallback writes into a checkpoint (its CHECKPOINT_NAME).
CHECKPOINT_FILE = "model.ubj"


class XGBoostParams(PluginParams):
    model: str = Field(
        description="A saved booster (.json or .ubj, Booster.save_model) or a Ray Train "
        "checkpoint folder (loaded with RayTrainReportCallback.get_model)."
    )
    checkpoint_filename: str = Field(
        default=CHECKPOINT_FILE,
        description="The booster's file name inside a checkpoint folder.",
    )
    feature_columns: list[str] | None = Field(
        default=None,
        description="Columns fed to the model, in this order. null: the model's own feature "
        "names (every input column but exclude_columns when the model has none).",
    )
    exclude_columns: list[str] = Field(
        default_factory=list,
        description="Columns never used as features (e.g. an id or the label).",
    )
    output_column: str = Field(default="predictions", description="Column for the predictions.")
    predict_type: Literal["value", "margin"] = Field(
        default="value", description="value: transformed predictions; margin: raw scores."
    )
    device: str | None = Field(
        default=None,
        description="XGBoost device (cpu, cuda); null: the GPU Ray assigned, else the CPU.",
    )


def booster_file(model: str, checkpoint_filename: str = CHECKPOINT_FILE) -> str:
    """The booster file ``model`` names: the file itself, or ``checkpoint_filename`` inside a
    Ray Train checkpoint folder. Raises :class:`DataError` (``predictor.params.model``) when the
    path does not exist, or is a folder without that file."""
    path = os.path.expanduser(model)
    if not os.path.exists(path):
        raise DataError(f"model path does not exist: {model}", key=f"{KEY}.model")
    if not os.path.isdir(path):
        return path
    if not os.path.isfile(os.path.join(path, checkpoint_filename)):
        listed = ", ".join(sorted(os.listdir(path))) or "(empty)"
        raise DataError(
            f"{model} is a folder without {checkpoint_filename} (has: {listed}); expected "
            "a Ray Train checkpoint written by RayTrainReportCallback",
            key=f"{KEY}.model",
        )
    return os.path.join(path, checkpoint_filename)


def _cannot_load(model: str, exc: Exception) -> DataError:
    first = str(exc).strip().splitlines()[0]
    return DataError(f"cannot load XGBoost model {model}: {first}", key=f"{KEY}.model")


def load_booster(model: str, checkpoint_filename: str = CHECKPOINT_FILE):
    """A Booster from a model file, or from a Ray Train checkpoint folder."""
    import xgboost

    path = booster_file(model, checkpoint_filename)
    try:
        if os.path.isdir(os.path.expanduser(model)):
            from ray.train import Checkpoint
            from ray.train.xgboost import RayTrainReportCallback

            return RayTrainReportCallback.get_model(
                Checkpoint.from_directory(os.path.expanduser(model)), filename=checkpoint_filename
            )
        booster = xgboost.Booster()
        booster.load_model(path)
        return booster
    except xgboost.core.XGBoostError as exc:
        raise _cannot_load(model, exc) from None


def prediction_width(model: str, checkpoint_filename: str, predict_type: str) -> int:
    """Values per row that ``inplace_predict`` returns for the booster ``model`` names, read
    from the booster file's learner config without Ray (plan time): ``num_class`` for a
    multi-class objective (``multi:softprob``, and ``multi:softmax`` margins;
    ``multi:softmax`` values are one class index per row), else ``num_target`` (several for
    multi-target regression and for ``reg:quantileerror`` with several ``quantile_alpha``),
    1 for regression, binary classification, ranking, counts and survival.

    Raises :class:`DataError` (``predictor.params.model``) for a missing path or a file that is
    not an XGBoost model.
    """
    import json

    import xgboost

    path = booster_file(model, checkpoint_filename)
    try:
        booster = xgboost.Booster(model_file=path)
    except xgboost.core.XGBoostError as exc:
        raise _cannot_load(model, exc) from None
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    shape = learner["learner_model_param"]
    classes = int(shape.get("num_class", "0"))
    if classes > 1:
        return 1 if objective == "multi:softmax" and predict_type == "value" else classes
    return max(1, int(shape.get("num_target", "1")))


class XGBoostPredictor(Predictor):
    """Predict with an XGBoost booster via ``inplace_predict`` (no DMatrix per batch)."""

    Params = XGBoostParams
    extras = {"xgboost": ("xgboost",)}
    libraries: ClassVar[tuple[str, ...]] = ("xgboost",)
    #: Measured on 2 CPUs, 1,000,000 rows x 30 features (benchmarks/RESULTS.md): a booster
    #: loads in a tenth of a second, so an actor's process start costs more than it saves;
    #: tasks reuse warm workers (the booster is kept per worker process). Batches of 131,072
    #: rows: per-batch overhead (a task, a write, a file) stops mattering; 4,096 made 245 of
    #: each and took twice as long. pyarrow batches skip the pandas round trip.
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="tasks", batch_size=131072, batch_format="pyarrow"
    )

    def __init__(self, params: XGBoostParams) -> None:
        super().__init__(params)
        import xgboost

        self.booster = load_booster(params.model, params.checkpoint_filename)
        has_cuda = bool(xgboost.build_info().get("USE_CUDA"))
        self.device = choose_device(params.device, ray_gpu_ids(), has_cuda)
        self.booster.set_param({"device": self.device})
        #: Feature columns by the batch's columns: a task worker keeps this instance for later
        #: jobs with the same params, whose data may have other columns.
        self._features: dict[tuple[str, ...], list[str]] = {}

    @classmethod
    def output_schema(cls, params: XGBoostParams, schema: Any) -> Any:
        """``output_column``: ``float32`` for one value per row (regression, binary
        classification, ``multi:softmax`` classes), or ``fixed_size_list<float32>[n]`` for
        ``n`` per row (multi-class probabilities or margins, several targets or quantiles), as
        :func:`prediction_width` reads it from the booster file before the job. Raises
        :class:`DataError` for a model path that does not exist or is no XGBoost model."""
        import pyarrow as pa

        if params.feature_columns:
            require_fields(schema, params.feature_columns, key="params.feature_columns")
        try:
            width = prediction_width(params.model, params.checkpoint_filename, params.predict_type)
        except DataError as exc:
            raise DataError(exc.message, key="params.model") from None
        kind = pa.float32() if width == 1 else pa.list_(pa.float32(), width)
        return added(schema, **{params.output_column: kind})

    def features(self, columns: list[str]) -> list[str]:
        """The model's input columns, in the order the model expects them."""
        p = self.params
        if p.feature_columns:
            require_columns(p.feature_columns, columns, key=f"{KEY}.feature_columns")
            return list(p.feature_columns)
        candidates = [c for c in columns if c not in p.exclude_columns and c != p.output_column]
        names = self.booster.feature_names
        if names:
            for name in names:
                if name not in candidates:
                    raise ColumnNotFoundError(
                        f"the model's feature {name!r} is not in the data"
                        + (" (it is excluded)" if name in p.exclude_columns else "")
                        + f"; available columns: {', '.join(candidates) or '(none)'}",
                        key=f"{KEY}.feature_columns",
                    )
            return list(names)
        if len(candidates) != self.booster.num_features():
            raise DataError(
                f"the model takes {self.booster.num_features()} features but the data has "
                f"{len(candidates)} columns after exclude_columns ({', '.join(candidates)}); set "
                "feature_columns or exclude_columns",
                key=f"{KEY}.feature_columns",
            )
        return candidates

    def _columns(self, columns: list[str]) -> list[str]:
        key = tuple(columns)
        if key not in self._features:
            self._features[key] = self.features(columns)
        return self._features[key]

    def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        if isinstance(batch, pd.DataFrame):
            data = batch[self._columns(list(batch.columns))]
        else:
            table = to_arrow(batch)
            data = np.column_stack(
                [
                    table.column(c).to_numpy(zero_copy_only=False)
                    for c in self._columns(table.column_names)
                ]
            ).astype(np.float32, copy=False)
        predictions = self.booster.inplace_predict(
            data, predict_type=self.params.predict_type, validate_features=False
        )
        predictions = np.asarray(predictions)
        out = self.params.output_column
        if isinstance(batch, pd.DataFrame):
            batch = batch.copy(deep=False)
            if predictions.ndim > 1:  # an Arrow-backed column: fixed_size_list<float32>[n]
                batch[out] = pd.Series(
                    pd.arrays.ArrowExtensionArray(_vectors(predictions)), index=batch.index
                )
            else:
                batch[out] = predictions
            return batch
        values = _vectors(predictions) if predictions.ndim > 1 else pa.array(predictions)
        return with_column(table, out, values)


def _vectors(predictions: Any) -> Any:
    """``[rows, n]`` float32 predictions as a ``fixed_size_list<float32>[n]`` array."""
    import pyarrow as pa

    flat = pa.array(predictions.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, predictions.shape[1])
