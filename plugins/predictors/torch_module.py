"""A PyTorch model as a predictor: a TorchScript / torch.export file, or a registered module class.

A config never names Python code: a ``torch.nn.Module`` class is chosen by its entry-point name
in the ``bulkinfer.torch_modules`` group, and its weights come from a state-dict file loaded with
``torch.load(weights_only=True)``, which cannot run code.

A classifier (a ``[rows, classes]`` logits tensor, e.g. a torchvision-style ResNet on the
``pixel_values`` of an ``image_transform`` stage) can write class names instead of logits: with
``labels`` (a file of class names) the stage writes ``label`` and ``score`` columns, or the
``top_k`` best of each, as :mod:`plugins.predictors._labels` computes them.
"""

from __future__ import annotations

import difflib
import os
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.contract.errors import DataError
from pipeline.contract.plugin import PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.stage import Predictor
from plugins.batches import (
    added,
    is_tensor_column,
    require_columns,
    require_fields,
    tensor_column,
    to_arrow,
    with_column,
)
from plugins.models import pick_device, torch_dtype
from plugins.predictors._labels import (
    ScoreFunction,
    label_arrays,
    label_types,
    read_labels,
    scores_of,
    top_labels,
)

KEY = "predictor.params"
MODULE_GROUP = "bulkinfer.torch_modules"
DType = Literal["float32", "float16", "bfloat16", "float64"]


def registered_modules() -> dict[str, str]:
    """Module classes registered under ``bulkinfer.torch_modules``: name -> "module:attr"."""
    return {ep.name: ep.value for ep in entry_points(group=MODULE_GROUP)}


class TorchModuleParams(PluginParams):
    model_file: str | None = Field(
        default=None,
        description="A TorchScript file (torch.jit.save) or a torch.export program (.pt2); "
        "it carries its weights.",
    )
    module: str | None = Field(
        default=None,
        description=f"Instead of model_file: a torch.nn.Module class registered under the "
        f"entry-point group {MODULE_GROUP!r} (e.g. 'mlp'), built with module_kwargs.",
    )
    module_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Constructor arguments for 'module'."
    )
    state_dict: str | None = Field(
        default=None,
        description="With 'module': the weights file, loaded with torch.load(weights_only=True).",
    )
    input_columns: list[str] = Field(
        min_length=1,
        description="Columns fed to the model. Each holds numbers, fixed-length lists of them, "
        "or tensors (e.g. the [channels, height, width] images of an image_transform stage).",
    )
    input_mode: Literal["stack", "args"] = Field(
        default="stack",
        description="stack: the columns side by side as one [rows, features] tensor (a single "
        "tensor column keeps its shape: [rows, channels, height, width]); args: one tensor per "
        "column, passed as positional arguments in this order.",
    )
    output_columns: list[str] = Field(
        default_factory=lambda: ["predictions"],
        min_length=1,
        description="Columns for the result: one column per returned tensor (tuple: by position, "
        "dict: by key), or one column per output feature of a single [rows, k] tensor.",
    )
    dtype: DType = Field(
        default="float32",
        description="Floating-point type of the model and its floating inputs (integer inputs "
        "such as token ids stay int64). Outputs are stored as float32 (float64 if chosen).",
    )
    device: str | None = Field(
        default=None, description="torch device; null: the GPU Ray assigned, else the CPU."
    )
    labels: str | None = Field(
        default=None,
        description="A classifier's class names: a text file with one name per line, or a JSON "
        "list, in the order of the model's outputs. The model's [rows, classes] logits then "
        "become label_column and score_column instead of output_columns.",
    )
    top_k: int = Field(
        default=1,
        ge=1,
        description="With labels: labels per row; 1 gives a string and a float32, more give "
        "lists of the best k, best first.",
    )
    score_function: ScoreFunction = Field(
        default="softmax",
        description="With labels: how logits become scores (softmax over the classes, sigmoid "
        "per class, or none).",
    )
    label_column: str = Field(default="label", description="With labels: the label column.")
    score_column: str = Field(default="score", description="With labels: the score column.")

    @field_validator("module_kwargs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("module")
    @classmethod
    def _registered(cls, module: str | None) -> str | None:
        if module is None:
            return module
        names = sorted(registered_modules())
        if module not in names:
            close = difflib.get_close_matches(module, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"no torch module registered as {module!r} in entry-point group "
                f"{MODULE_GROUP!r}.{hint} Registered: {', '.join(names) or '(none)'}"
            )
        return module

    @model_validator(mode="after")
    def _one_source(self) -> TorchModuleParams:
        if (self.model_file is None) == (self.module is None):
            raise ValueError("set exactly one of model_file (TorchScript/.pt2) or module")
        if self.module is not None and self.state_dict is None:
            raise ValueError("module needs state_dict: the weights file for the module")
        if self.model_file is not None and (self.state_dict or self.module_kwargs):
            raise ValueError("state_dict and module_kwargs go with module, not model_file")
        labelled = {"top_k", "score_function", "label_column", "score_column"}
        if self.labels is None and labelled & self.model_fields_set:
            first = sorted(labelled & self.model_fields_set)[0]
            raise ValueError(f"{first} goes with labels (a file of class names); set labels")
        if self.labels is not None and "output_columns" in self.model_fields_set:
            raise ValueError(
                "with labels the outputs are label_column and score_column; leave "
                "output_columns out"
            )
        return self


def _load(params: TorchModuleParams):
    import torch

    def exists(path: str, key: str) -> str:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise DataError(f"file does not exist: {path}", key=f"{KEY}.{key}")
        return path

    if params.model_file is not None:
        path = exists(params.model_file, "model_file")
        try:
            if path.endswith(".pt2"):
                return torch.export.load(path).module()
            return torch.jit.load(path, map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError, zip errors...
            raise DataError(
                f"cannot load {path} as TorchScript or .pt2: {exc}", key=f"{KEY}.model_file"
            ) from None
    from importlib.metadata import EntryPoint

    value = registered_modules()[params.module]
    cls = EntryPoint(name=params.module, value=value, group=MODULE_GROUP).load()
    try:
        model = cls(**params.module_kwargs)
    except TypeError as exc:
        raise DataError(f"{params.module}: {exc}", key=f"{KEY}.module_kwargs") from None
    path = exists(params.state_dict, "state_dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # unpickling refused, missing/unexpected keys, shape mismatch
        first = str(exc).strip().splitlines()[0]
        raise DataError(
            f"cannot load {path} into {params.module}: {first}", key=f"{KEY}.state_dict"
        ) from None
    return model


def _column_array(table: Any, name: str):
    """A column as a numpy array: [rows] for numbers, [rows, k] for fixed-length lists,
    [rows, *shape] for a tensor column (e.g. [rows, 3, 224, 224] from an image_transform)."""
    import numpy as np
    import pyarrow as pa

    if is_tensor_column(table, name):
        return tensor_column(table, name, key=f"{KEY}.input_columns")
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise DataError(f"column {name!r} has null values", key=f"{KEY}.input_columns")
    kind = column.type
    if pa.types.is_fixed_size_list(kind):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), kind.list_size)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        rows = column.to_pylist()
        if len({len(r) for r in rows}) > 1:
            raise DataError(
                f"column {name!r} holds lists of different lengths; pad them (e.g. a tokenize "
                "stage with padding: max_length)",
                key=f"{KEY}.input_columns",
            )
        return np.asarray(rows)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return column.to_numpy(zero_copy_only=False)
    raise DataError(f"column {name!r} is {kind}, not numbers", key=f"{KEY}.input_columns")


class TorchModule(Predictor):
    """Run a PyTorch model on numeric or tensor columns under ``torch.inference_mode``."""

    Params = TorchModuleParams
    extras = {"torch": ("torch",)}
    libraries: ClassVar[tuple[str, ...]] = ("torch",)
    default_stage: ClassVar[StageSettings] = StageSettings(
        compute="actors", concurrency=1, batch_size=256, batch_format="pyarrow"
    )

    def __init__(self, params: TorchModuleParams) -> None:
        super().__init__(params)
        self.labels = None if params.labels is None else read_labels(params.labels, "params.labels")
        self.device = pick_device(params.device)
        self.dtype = torch_dtype(params.dtype)
        model = _load(params)
        model = model.to(self.device)
        try:
            model = model.eval()
        except NotImplementedError:  # torch.export modules are always in inference form
            pass
        if any(p.is_floating_point() for p in model.parameters()):
            model = model.to(self.dtype)
        self.model = model

    @classmethod
    def output_schema(cls, params: TorchModuleParams, schema: Any) -> Any:
        """Each output column holds float32 (float64 with ``dtype: float64``, int64 for integer
        tensors) per row, or a fixed-size list of them; the shape is the model's, known only
        once it runs, so the columns are declared ``null`` (decided at run time). With
        ``labels``: ``label_column`` string and ``score_column`` float32 (``list<string>`` and
        ``list<float32>`` with ``top_k > 1``). Raises :class:`DataError` naming the param for a
        ``model_file`` or ``state_dict`` that does not exist and a ``labels`` file that does
        not exist or cannot be read, before the job."""
        import pyarrow as pa

        require_fields(schema, params.input_columns, key="params.input_columns")
        for name in ("model_file", "state_dict"):  # local files: refused before the job
            path = getattr(params, name)
            if path is not None and not os.path.isfile(os.path.expanduser(path)):
                raise DataError(f"file does not exist: {path}", key=f"params.{name}")
        if params.labels is not None:
            read_labels(params.labels, "params.labels")
            label, score = label_types(params.top_k)
            return added(schema, **{params.label_column: label, params.score_column: score})
        return added(schema, **{name: pa.null() for name in params.output_columns})

    def _tensor(self, array: Any):
        import numpy as np
        import torch

        if np.issubdtype(array.dtype, np.floating):
            return torch.as_tensor(array, device=self.device).to(self.dtype)
        return torch.as_tensor(array.astype(np.int64, copy=False), device=self.device)

    def _inputs(self, table: Any) -> list[Any]:
        import numpy as np

        arrays = [_column_array(table, c) for c in self.params.input_columns]
        if self.params.input_mode == "args":
            return [self._tensor(a) for a in arrays]
        if len(arrays) == 1 and arrays[0].ndim > 2:  # one tensor column, e.g. images: its shape
            return [self._tensor(arrays[0])]
        shaped = [c for c, a in zip(self.params.input_columns, arrays, strict=True) if a.ndim > 2]
        if shaped:
            raise DataError(
                f"column {shaped[0]!r} holds arrays of shape {arrays[0].shape[1:]}, which "
                "input_mode stack cannot put side by side with other columns; use input_mode "
                "args (one tensor per column)",
                key=f"{KEY}.input_mode",
            )
        columns = [a.reshape(len(a), -1) for a in arrays]
        if all(np.issubdtype(c.dtype, np.integer) for c in columns):
            return [self._tensor(np.concatenate(columns, axis=1))]
        # One copy, in the precision the model takes (float64 only when it computes in it).
        wide = np.float64 if self.params.dtype == "float64" else np.float32
        return [self._tensor(np.concatenate(columns, axis=1).astype(wide, copy=False))]

    def _outputs(self, result: Any, rows: int) -> dict[str, Any]:
        import torch

        names = self.params.output_columns
        if isinstance(result, dict):
            missing = [n for n in names if n not in result]
            if missing:
                raise DataError(
                    f"the model returned keys {sorted(result)}, not {missing[0]!r}",
                    key=f"{KEY}.output_columns",
                )
            return {n: result[n] for n in names}
        if isinstance(result, (tuple, list)):
            if len(result) != len(names):
                raise DataError(
                    f"the model returned {len(result)} tensors for {len(names)} output columns",
                    key=f"{KEY}.output_columns",
                )
            return dict(zip(names, result, strict=True))
        if not isinstance(result, torch.Tensor):
            raise DataError(f"the model returned {type(result).__name__}, not tensors")
        if len(names) == 1:
            return {names[0]: result}
        if result.dim() == 2 and result.shape[1] == len(names):
            return {n: result[:, i] for i, n in enumerate(names)}
        raise DataError(
            f"the model returned one tensor of shape {tuple(result.shape)} for "
            f"{len(names)} output columns (expected [rows, {len(names)}])",
            key=f"{KEY}.output_columns",
        )

    def _arrow(self, name: str, tensor: Any, rows: int):
        import numpy as np
        import pyarrow as pa
        import torch

        if tensor.is_floating_point():
            keep = torch.float64 if self.params.dtype == "float64" else torch.float32
            tensor = tensor.to(keep)
        array = tensor.detach().cpu().numpy()
        if array.shape[:1] != (rows,):
            raise DataError(
                f"output {name!r} has shape {array.shape}, not one value per row ({rows} rows)",
                key=f"{KEY}.output_columns",
            )
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 1:
            return pa.array(array)
        width = int(np.prod(array.shape[1:]))
        return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), width)

    def __call__(self, batch: Any) -> Any:
        import torch

        table = to_arrow(batch)
        require_columns(self.params.input_columns, table.column_names, f"{KEY}.input_columns")
        with torch.inference_mode():
            result = self.model(*self._inputs(table))
        if self.labels is not None:
            return self._labelled(table, result)
        for name, tensor in self._outputs(result, table.num_rows).items():
            table = with_column(table, name, self._arrow(name, tensor, table.num_rows))
        return table

    def _labelled(self, table: Any, result: Any) -> Any:
        """``table`` with the label and score columns of ``[rows, classes]`` logits."""
        import torch

        p = self.params
        if not isinstance(result, torch.Tensor) or result.dim() != 2:
            what = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result)
            raise DataError(
                f"with labels the model must return one [rows, classes] tensor of logits, not "
                f"{what}",
                key=f"{KEY}.labels",
            )
        if result.shape[1] != len(self.labels):
            raise DataError(
                f"the model gives {result.shape[1]} classes but the labels file names "
                f"{len(self.labels)}",
                key=f"{KEY}.labels",
            )
        scores = scores_of(result.detach().to(torch.float32).cpu().numpy(), p.score_function)
        labels, best = top_labels(scores, self.labels, p.top_k)
        names, values = label_arrays(labels, best, p.top_k)
        table = with_column(table, p.label_column, names)
        return with_column(table, p.score_column, values)
