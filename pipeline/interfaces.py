"""The plugin contract: four small base classes.

A plugin class carries ``Params``, a pydantic model (``extra="forbid"``, each field with a
description) that validates its ``params`` block. Sources and sinks run on the driver and hand Ray
Data a dataset; preprocessors and predictors are ``map_batches`` callables whose ``__init__`` does
the heavy set-up once per worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pipeline.settings import StageSettings

if TYPE_CHECKING:  # Ray is imported by the plugins that use it, at run time only.
    import ray.data


class PluginParams(BaseModel):
    """Base for plugin ``Params``: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())


class Plugin:
    """Common to every plugin: the params model and a one-line summary (the docstring)."""

    Params: ClassVar[type[PluginParams]] = PluginParams
    #: Distributions (pip names) whose versions decide the plugin's results, e.g. the model
    #: library; a run records their versions in its metrics.
    libraries: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class IOContext:
    """What the planner decided for read and write tasks; pass it on to Ray's I/O calls."""

    #: Ray remote args for read/write tasks (the planner's CPU share), e.g. ``{"num_cpus": 0.5}``.
    ray_remote_args: dict[str, Any] = field(default_factory=dict)
    #: Blocks the source should produce so every worker of every stage gets work (None: Ray's).
    num_blocks: int | None = None


@dataclass(frozen=True)
class SinkResult:
    """Where a sink put the output and, if it knows, how many rows it wrote."""

    location: str | None = None
    rows: int | None = None


class _IOPlugin(Plugin):
    def __init__(self, io: IOContext | None = None) -> None:
        self.io = io or IOContext()


class Source(_IOPlugin):
    """Reads the input into a Ray Dataset. Runs on the driver."""

    def read(self, params: Any) -> ray.data.Dataset:
        """Return a lazy Dataset; pass ``self.io`` settings to Ray's read call."""
        raise NotImplementedError


class Sink(_IOPlugin):
    """Consumes the final Dataset (writes it, prints it, ...). Runs on the driver."""

    def check(self, params: Any) -> None:
        """Refuse before the job starts (e.g. output exists); raise a BulkInferError."""

    def write(self, dataset: ray.data.Dataset, params: Any) -> SinkResult:
        """Consume ``dataset``; pass ``self.io`` settings to Ray's write call."""
        raise NotImplementedError


class MapStage(Plugin):
    """A ``map_batches`` callable. ``__init__`` runs once per worker with the validated params."""

    default_stage: ClassVar[StageSettings] = StageSettings()

    def __init__(self, params: Any) -> None:
        self.params = params

    def __call__(self, batch: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def output_columns(cls, params: Any, input_columns: list[str]) -> list[str]:
        """Columns after this stage, given those before it.

        Raise :class:`pipeline.errors.ColumnNotFoundError` for a column the stage needs but the
        input lacks, so the runner can refuse the job before any model loads. The default keeps
        the columns unchanged.
        """
        return list(input_columns)


class Preprocessor(MapStage):
    """A CPU transform of batches; runs as tasks unless its ``default_stage`` says otherwise."""


class Predictor(MapStage):
    """Runs a model on batches; an actor pool by default so the model loads once per actor."""

    default_stage: ClassVar[StageSettings] = StageSettings(compute="actors", concurrency=1)
