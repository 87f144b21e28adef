"""Pydantic models for the parts of a job config that are not plugin-specific.

Plugins validate their own ``params``; everything else (how a stage runs, how Ray starts, what the
run does) is validated here, with ``extra="forbid"`` so a misspelt key is an error, not a no-op.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

BatchFormat = Literal["numpy", "pandas", "pyarrow"]
Compute = Literal["actors", "tasks"]
OnError = Literal["fail", "skip", "dead_letter"]
ProgressMode = Literal["auto", "bar", "log", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ConcurrencyRange(_Strict):
    """Bounds of an autoscaling actor pool."""

    min: int = Field(ge=1, description="Actors kept alive at all times.")
    max: int = Field(ge=1, description="Most actors the pool grows to under load.")

    @model_validator(mode="after")
    def _ordered(self) -> ConcurrencyRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class StageSettings(_Strict):
    """How one map stage (a preprocessor or the predictor) runs on Ray Data."""

    batch_size: int | Literal["auto"] | None = Field(
        default=None,
        description="Rows per batch handed to the stage; required when num_gpus > 0. 'auto': "
        "each worker probes sizes on its first rows and keeps the one after which throughput "
        "stops rising (within memory: no out-of-memory error, peak RSS under 'memory').",
    )
    batch_format: BatchFormat = Field(
        default="numpy", description="Batch type the stage receives: numpy, pandas or pyarrow."
    )
    compute: Compute = Field(
        default="tasks",
        description="actors: a pool of long-lived workers (state, e.g. a model, loads once); "
        "tasks: stateless short-lived workers.",
    )
    concurrency: int | ConcurrencyRange | None = Field(
        default=None,
        description="Actors: pool size, or {min, max} to autoscale. Tasks: most tasks at once "
        "(null: as many as resources allow).",
    )
    num_cpus: float | None = Field(
        default=None,
        ge=0,
        description="CPUs reserved per worker; null lets the planner share the cluster's CPUs "
        "between actor pools and I/O.",
    )
    num_gpus: float = Field(default=0, ge=0, description="GPUs reserved per worker.")
    memory: int | None = Field(
        default=None, ge=0, description="Bytes of memory reserved per worker (limits packing)."
    )
    num_threads: int | None = Field(
        default=None,
        ge=1,
        description="Native threads per worker (torch, XGBoost, BLAS). null: actors get the "
        "node's CPUs divided by the actors of all pools (at least 1); tasks get Ray's default.",
    )
    ray_remote_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Other Ray remote arguments passed through to map_batches "
        "(e.g. resources, accelerator_type, runtime_env).",
    )
    on_error: OnError = Field(
        default="fail",
        description="When a batch raises: fail the job; or retry its rows one by one and "
        "skip the rows that still fail, or write them to <output>/_errors/ (dead_letter).",
    )
    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="skip/dead_letter: the job stops once this stage has set aside more than "
        "this fraction of the rows it received.",
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PydanticCustomError(
                "batch_size", "must be an integer greater than 0, 'auto' or null"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StageSettings:
        if self.num_gpus > 0 and self.batch_size is None:
            raise ValueError("batch_size is required when num_gpus > 0 (Ray refuses otherwise)")
        if self.compute == "tasks" and isinstance(self.concurrency, ConcurrencyRange):
            raise ValueError("{min, max} concurrency is for compute: actors; tasks take an int")
        reserved = {"num_cpus", "num_gpus", "memory", "concurrency", "compute", "batch_size"}
        reserved |= {"on_error", "max_error_rate"}
        clash = sorted(reserved & set(self.ray_remote_args))
        if clash:
            raise ValueError(f"set {', '.join(clash)} as stage keys, not in ray_remote_args")
        return self

    @property
    def min_workers(self) -> int:
        """Workers an actor pool holds at all times (tasks hold none)."""
        if self.compute == "tasks":
            return 0
        if isinstance(self.concurrency, ConcurrencyRange):
            return self.concurrency.min
        return self.concurrency or 1


class StageConfig(_Strict):
    """One stage as written in YAML: which plugin, its params, and (map stages) how it runs."""

    type: str = Field(description="The plugin's registered entry-point name.")
    params: dict[str, Any] = Field(default_factory=dict, description="Validated by the plugin.")
    stage: dict[str, Any] | None = Field(
        default=None, description="StageSettings overrides (map stages only)."
    )


class RaySettings(_Strict):
    """Where the job runs. No address: an embedded local Ray started for this job."""

    address: str | None = Field(
        default=None, description="null: start local Ray; 'auto' or 'ray://host:port': connect."
    )
    num_cpus: int | None = Field(default=None, ge=1, description="Local Ray only: CPUs to use.")
    num_gpus: int | None = Field(default=None, ge=0, description="Local Ray only: GPUs to use.")
    object_store_memory: int | None = Field(
        default=None, ge=78643200, description="Local Ray only: object store bytes."
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray runtime_env (working_dir, pip, env_vars, ...)."
    )
    include_dashboard: bool = Field(default=False, description="Local Ray only.")
    io_cpus: float = Field(
        default=1.0,
        gt=0,
        description="CPUs the planner keeps free for read and write tasks when it sizes actors "
        "(at most half the cluster). Ray Data's own tasks (e.g. Parquet file listing) ask for a "
        "whole CPU, so less than 1 can leave them waiting forever behind the actor pools.",
    )


class RunSettings(_Strict):
    """What the run does besides the data flow."""

    dry_run: bool = Field(default=False, description="Validate and print the plan; start nothing.")
    name: str = Field(default="bulkinfer", description="Job name, used in logs.")
    progress: ProgressMode = Field(
        default="auto",
        description="The job's progress line on stderr, in rows written of the whole job: bar "
        "(redrawn in place, twice a second), log (a line every 15 s), auto (bar on a terminal, "
        "log otherwise), off. true and false mean auto and off.",
    )
    ray_logs: bool = Field(
        default=False,
        description="Show Ray's own output for debugging: Ray Data's progress bars and its "
        "INFO lines (execution plans, finished datasets), and Ray's INFO logs. Warnings and "
        "errors are shown either way.",
    )
    resume: bool = Field(
        default=False,
        description="Finish an interrupted run of the same config and input: read only the "
        "rows no write record holds (the config fingerprint must match). A job whose output is "
        "already published is refused, naming its run.",
    )
    unit_rows: int = Field(
        default=1_000_000,
        gt=0,
        description="Rows per work unit for sources that split by rows (items). Units name the "
        "rows and split the read into tasks; the job runs as one execution and records what "
        "each write task wrote, whatever the unit size.",
    )
    unit_bytes: int = Field(
        default=512 * 2**20,
        gt=0,
        description="File sources: input files are grouped into work units of about this "
        "many bytes (a file is never split); each unit is one read task.",
    )
    allow_empty: bool = Field(
        default=False,
        description="A source without rows is an error (exit 2) unless this is true: then "
        "the job publishes an empty output with its manifest.",
    )
    stall_timeout_s: float = Field(
        default=1800,
        gt=0,
        description="Fail the job when no stage makes progress for this long (e.g. waiting "
        "for resources the cluster never frees).",
    )

    @field_validator("progress", mode="before")
    @classmethod
    def _progress(cls, value: Any) -> Any:
        # run.progress was a bool before it had modes: true is auto, false is off.
        if value is True:
            return "auto"
        if value is False:
            return "off"
        return value


class JobConfig(_Strict):
    """The whole composed config, before plugin params are validated."""

    source: StageConfig
    preprocessors: list[StageConfig] = Field(default_factory=list)
    predictor: StageConfig | None = None
    sink: StageConfig
    ray: RaySettings = Field(default_factory=RaySettings)
    run: RunSettings = Field(default_factory=RunSettings)


#: Largest batch ``batch_size: auto`` probes (rows); also the batch Ray hands the stage.
AUTO_MAX_ROWS = 4096
