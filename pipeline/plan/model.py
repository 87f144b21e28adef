"""The plan: one frozen value the planner builds, the dry run prints and the runner executes.

A :class:`Plan` is what the job is (its steps with their params and stage settings as
configured, the columns after each, the config fingerprint) with its :class:`Layout`, how it
runs on the cluster it was planned for (each map stage's CPUs, threads and actors, read tasks,
blocks, map batch windows, and the notes that explain them). The runner executes both
unchanged; where it knows a work unit's rows it derives that unit's layout from them
(:func:`pipeline.plan.shares.fit_windows`), never a new plan.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.errors import PlanError
from pipeline.contract.plugin import IOContext, Plugin
from pipeline.contract.settings import ConcurrencyRange, RaySettings, RunSettings, StageSettings
from pipeline.output.records import StagedJob


@dataclass(frozen=True)
class Cluster:
    """The resources a job plans for: totals, and each node's (a worker fits on one node)."""

    cpus: float
    gpus: float
    memory: float = math.inf
    nodes: tuple[dict[str, float], ...] = ()
    #: How the plan names it: "local machine", "Ray cluster at auto", ...
    name: str = "Ray cluster"

    @classmethod
    def local(cls, ray: RaySettings) -> Cluster:
        """The machine this process runs on, as the embedded Ray would see it.

        CPUs: ``ray.num_cpus`` or every core; GPUs: ``ray.num_gpus`` or those visible here
        (``CUDA_VISIBLE_DEVICES``, else the ``/dev/nvidia<N>`` devices), as Ray counts them.
        """
        cpus = float(ray.num_cpus or os.cpu_count() or 1)
        gpus = float(ray.num_gpus if ray.num_gpus is not None else local_gpus())
        node = {"CPU": cpus, "GPU": gpus}
        return cls(cpus=cpus, gpus=gpus, nodes=(node,), name="local machine")


def local_gpus() -> int:
    """NVIDIA GPUs this process may use, counted without importing a GPU library."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len(glob.glob("/dev/nvidia[0-9]*"))


@dataclass(frozen=True)
class Step:
    """One plugin in the job: where it came from in the config, its class and validated params."""

    key: str  # config path: "source", "preprocessors[0]", "predictor", "sink"
    kind: str
    name: str
    plugin: type[Plugin]
    params: Any
    #: Map stages only: the stage settings as configured (the plugin's ``default_stage`` under
    #: the config's ``stage`` block); how the stage runs is its plan's
    #: :meth:`Layout.settings`.
    stage: StageSettings | None = None


@dataclass(frozen=True)
class StageLayout:
    """How one map stage runs on the plan's cluster: its workers' CPUs and threads and its
    actors, as :func:`pipeline.plan.shares.share_cluster` decided them (a stage's own settings
    where its config sets them, the planner's share where it leaves them open)."""

    #: CPUs each worker asks Ray for.
    num_cpus: float | None
    #: Native threads each worker runs with (None: the libraries' default).
    num_threads: int | None
    #: Actors of a pool ({min, max}: autoscaling), or tasks at once (None: as Ray schedules).
    concurrency: int | ConcurrencyRange | None


@dataclass(frozen=True)
class Layout:
    """How a plan runs on its cluster: the physical choices :mod:`pipeline.plan.shares` derives
    from the plan's steps and the cluster's resources (the fingerprint covers none of them)."""

    #: CPUs of each read and write task.
    io_cpus: float
    #: Read tasks the source is asked for (None: Ray's choice).
    read_tasks: int | None = None
    #: Rows per block after the read (None: as the source produces them).
    rows_per_block: int | None = None
    #: Rows per Ray map batch, by stage key (see :func:`pipeline.plan.shares.map_batch_rows`;
    #: None: whole blocks, cut by the stage's wrapper).
    map_batches: dict[str, int | None] = field(default_factory=dict)
    #: Each map stage's CPUs, threads and actors, by stage key (see :meth:`settings`).
    stages: dict[str, StageLayout] = field(default_factory=dict)
    #: The planner's decisions in the words the dry run prints them (CPU shares, threads,
    #: windows, blocks), as planned (a layout fitted to a number of rows keeps them).
    notes: tuple[str, ...] = ()

    def settings(self, step: Step) -> StageSettings:
        """The stage settings map stage ``step`` runs with: its config's, with this layout's
        CPUs, threads and actors (``step.stage`` itself for a step the layout has no entry
        for)."""
        entry = self.stages.get(step.key)
        if entry is None or step.stage is None:
            return step.stage
        return step.stage.model_copy(
            update={
                "num_cpus": entry.num_cpus,
                "num_threads": entry.num_threads,
                "concurrency": entry.concurrency,
            }
        )


@dataclass(frozen=True)
class Plan:
    """Everything the runner needs, decided and checked once (see the module docstring)."""

    source: Step
    maps: tuple[Step, ...]
    sink: Step
    ray: RaySettings
    run: RunSettings
    fingerprint: str
    #: The part of the config the fingerprint covers (see
    #: :func:`pipeline.plan.fingerprints.dataflow`).
    dataflow: dict[str, Any]
    cluster: Cluster
    #: How the job runs on ``cluster`` (read tasks, blocks, map batch windows, each stage's
    #: CPUs, threads and actors).
    layout: Layout
    #: The Arrow schema after each step, by step key ("source", "preprocessors[0]", ...); empty
    #: when the source can tell it only by reading (the runner then types the plan first).
    schemas: dict[str, Any] = field(default_factory=dict)
    #: Index in ``maps`` of the first stage whose columns are decided at run time (it declares
    #: no ``output_schema``) and not typed yet: ``schemas`` stops before it and the sink is not
    #: checked yet (see :func:`pipeline.plan.planner.typed_at_run_time`). None: nothing pending.
    pending: int | None = None
    #: Keys of the stages typed from their first output batch, in order.
    run_time_typed: tuple[str, ...] = ()
    #: The source has no rows and ``run.allow_empty`` is set: an empty output is published.
    empty: bool = False
    #: A table sink's job record of this very job is there to resume (``run.resume=true``).
    resumes: bool = False
    #: Environment variables of every task and actor of the job, from the map stages'
    #: :meth:`~pipeline.contract.stage.MapStage.env_vars` (e.g. a model library's offline
    #: switches): in :meth:`io`'s remote args and in each map stage's.
    env_vars: dict[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.source, *self.maps, self.sink)

    @property
    def output_schema(self) -> Any:
        """The Arrow schema the sink gets (None until the plan is typed).

        Raises :class:`~pipeline.contract.errors.PlanError` while a stage's columns are decided
        at run time and not typed yet (``pending``): no output may be opened with the columns
        before that stage.
        """
        if self.pending is not None:
            step = self.maps[self.pending]
            raise PlanError(
                f"the columns after {step.key} are decided at run time (its stage '{step.name}' "
                "declares no output_schema) and were not typed from its first batch before the "
                "output was opened",
                key=step.key,
            )
        return list(self.schemas.values())[-1] if self.schemas else None

    @property
    def pending_step(self) -> Step | None:
        """The stage whose columns are decided at run time and not typed yet, if any."""
        return self.maps[self.pending] if self.pending is not None else None

    def staged_job(self) -> StagedJob:
        """What a staged output records of this job
        (:class:`~pipeline.output.records.StagedJob`)."""
        mode = getattr(self.sink.params, "mode", "")
        return StagedJob(self.fingerprint, self.dataflow, self.run.resume, mode)

    def io(self) -> IOContext:
        """What read and write tasks get (see :class:`~pipeline.contract.plugin.IOContext`)."""
        return IOContext(
            ray_remote_args=with_env({"num_cpus": self.layout.io_cpus}, self.env_vars),
            num_blocks=self.layout.read_tasks,
            fingerprint=self.fingerprint,
            unit_rows=self.run.unit_rows,
            unit_bytes=self.run.unit_bytes,
        )


def with_env(ray_remote_args: dict[str, Any], env_vars: dict[str, str]) -> dict[str, Any]:
    """``ray_remote_args`` whose ``runtime_env`` also sets ``env_vars`` (those the args set
    already win); unchanged when there are none."""
    if not env_vars:
        return ray_remote_args
    runtime_env = dict(ray_remote_args.get("runtime_env") or {})
    runtime_env["env_vars"] = {**env_vars, **(runtime_env.get("env_vars") or {})}
    return {**ray_remote_args, "runtime_env": runtime_env}
