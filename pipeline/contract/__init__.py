"""The plugin contract: what a plugin package may import from bulkinfer, all of it here.

A plugin class carries ``Params``, a pydantic model (``extra="forbid"``, each field with a
description) that validates its ``params`` block. Sources and sinks run on the driver and hand Ray
Data a dataset (or take one); preprocessors and predictors are ``map_batches`` callables whose
``__init__`` does the heavy set-up once per worker. Errors a plugin raises name keys relative to
its own block (``params.input_column``); the core makes them absolute
(``predictor.params.input_column``), on the driver and inside workers alike.

One module per plugin kind, each opening with its required and optional hooks:
:mod:`~pipeline.contract.source`, :mod:`~pipeline.contract.stage` (preprocessors and
predictors), :mod:`~pipeline.contract.sink`; beside them what every plugin shares
(:mod:`~pipeline.contract.plugin`), stage settings (:mod:`~pipeline.contract.settings`), errors
(:mod:`~pipeline.contract.errors`), Arrow type names (:mod:`~pipeline.contract.schema`), batch
formats (:mod:`~pipeline.contract.batches`), a stage's journal of results
(:mod:`~pipeline.contract.journal`), secrets masking and bounded calls to remote
services (:mod:`~pipeline.contract.reach`), and test-only halt points for fault tests
(:mod:`~pipeline.contract.halts`). Nothing here imports Ray, Hydra or a model library.

The contract is versioned: :data:`PLUGIN_API` (``"MAJOR.MINOR"``) is the version this bulkinfer
provides, and a plugin class may say which version it was built for (``plugin_api = "1.1"``); a
plugin built for another major version is refused when it loads.
"""

from __future__ import annotations

from pipeline.contract.errors import (
    BulkInferError,
    ColumnNotFoundError,
    ConfigError,
    DataError,
    EmptyInputError,
    OutputError,
    PlanError,
    PluginLoadError,
    PluginNotFoundError,
)
from pipeline.contract.journal import Journal
from pipeline.contract.plugin import PLUGIN_API, IOContext, Plugin, PluginParams
from pipeline.contract.settings import StageSettings
from pipeline.contract.sink import (
    DatasetSink,
    FileOutput,
    FileSink,
    JobStore,
    Sink,
    SinkResult,
    StagedTarget,
    StoreFolder,
    TableSink,
)
from pipeline.contract.source import WHOLE_SOURCE, Preview, Source, WorkUnit
from pipeline.contract.stage import MapStage, Predictor, Preprocessor

__all__ = [
    "PLUGIN_API",
    "WHOLE_SOURCE",
    "BulkInferError",
    "ColumnNotFoundError",
    "ConfigError",
    "DataError",
    "DatasetSink",
    "EmptyInputError",
    "FileOutput",
    "FileSink",
    "IOContext",
    "Journal",
    "JobStore",
    "MapStage",
    "OutputError",
    "PlanError",
    "Plugin",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginParams",
    "Predictor",
    "Preprocessor",
    "Preview",
    "Sink",
    "SinkResult",
    "Source",
    "StageSettings",
    "StagedTarget",
    "StoreFolder",
    "TableSink",
    "WorkUnit",
]
