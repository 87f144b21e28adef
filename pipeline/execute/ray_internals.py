"""Every private Ray API bulkinfer touches, in one place, each behind a small function.

Ray's public API has no way to do these things; each is used for a measured reason given in its
docstring. ``tests/test_ray_internals.py`` has one test per hook that fails loudly when a Ray
release moves or changes it (pyproject.toml pins the Ray versions that were tested). At run time
a hook that stopped working degrades as its docstring says (a warning, a missing figure), never
into a wrong result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("bulkinfer")

#: Ray Data's progress logger (silenced unless run.ray_logs).
PROGRESS_LOGGER = "ray.data._internal.progress"
#: The logger Ray Data configures with a console and a file handler.
RAY_DATA_LOGGER = "ray.data"


def ray_data_console_level(level: int) -> bool:
    """Set the level of Ray Data's console handler on the driver; its log files keep every line.

    Ray Data configures its logger ``ray.data`` once, when it is imported, with a handler for
    the session's log files (``SessionFileHandler``) and one for the console at INFO (its
    default logging config in ``ray/data/_internal/logging.py``); the logger's own level must
    stay DEBUG for the files. Returns whether a console handler was found (False: Ray Data's
    logging config changed, or the user replaced it with ``RAY_DATA_LOGGING_CONFIG``; its INFO
    lines then show as that config says).
    """
    from ray.data._internal.logging import SessionFileHandler

    found = False
    for handler in logging.getLogger(RAY_DATA_LOGGER).handlers:
        if not isinstance(handler, SessionFileHandler | logging.FileHandler):
            handler.setLevel(level)
            found = True
    return found


def stop_autoscaler_monitor() -> bool:
    """Kill the autoscaler monitor of a node this process started, before ``ray.shutdown``.

    ``ray.shutdown`` stops the GCS before the monitor, and the monitor answers SIGTERM by
    reporting its exit to that GCS: it never gets through, and is killed only after a second's
    grace (Ray 2.60: 1.4 s to shut down, 0.4 s with the monitor gone first). The monitor of a
    single embedded node has nothing to save. A driver connected to a cluster started no
    processes, so nothing is killed. Returns whether a monitor was found.
    """
    from ray._private import ray_constants
    from ray._private.worker import _global_node

    if _global_node is None:
        return False
    monitors = _global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
    for info in monitors:
        info.process.kill()
        info.process.wait(timeout=5)
    return bool(monitors)


def live_map_workers() -> dict[str, str]:
    """This driver's Ray Data map-stage actors that are not dead: actor id -> class name.

    The GCS view of actors (``ray._private.state``); the public state API needs the dashboard,
    which the embedded Ray does not start.
    """
    import ray
    from ray._private import state

    job_id = ray.get_runtime_context().get_job_id()
    return {
        actor_id: str(actor["ActorClassName"])
        for actor_id, actor in state.actors().items()
        if actor["JobID"] == job_id
        and actor["State"] != "DEAD"
        and str(actor["ActorClassName"]).startswith("MapWorker(")
    }


def kill_actors(actor_ids: list[str]) -> None:
    """Kill actors by id, without restart: Ray has no public call for an actor without its
    handle, and a failed job's pool can outlive the job while anything holds its traceback."""
    import ray
    from ray._raylet import ActorID

    core_worker = ray._private.worker.global_worker.core_worker
    for actor_id in actor_ids:
        with contextlib.suppress(Exception):  # already gone
            core_worker.kill_actor(ActorID.from_hex(actor_id), True)  # no_restart


def streaming_repartition(
    ds: Any, rows: int, num_cpus: float, ray_remote_args: dict[str, Any] | None = None
) -> Any:
    """``ds`` with blocks of at most ``rows`` rows, cut inside the read tasks (no barrier).

    Ray Data fuses read -> pass-through ``map_batches`` -> streaming repartition into one task
    operator that runs with the read's CPU share. The public ``Dataset.repartition`` gives its
    operator no remote arguments, so it would ask for a whole CPU per task, not fuse with the
    read, and wait forever on a machine whose actor pools hold all but the I/O share (Ray Data
    2.60 on 2 CPUs); hence the logical operator is built here with the read's share.
    ``ray_remote_args``: the read's other remote args (its ``runtime_env``), which must be the
    same for the operators to fuse.
    """
    import ray.data
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import StreamingRepartition

    args = {**(ray_remote_args or {}), "num_cpus": num_cpus}
    ds = ds.map_batches(_identity, batch_format="pyarrow", **args)
    op = StreamingRepartition(
        target_num_rows_per_block=rows,
        input_dependencies=[ds._logical_plan.dag],
        ray_remote_args=args,
    )
    return ray.data.Dataset._from_parent(ds, LogicalPlan(op, ds.context))


def _identity(batch: Any) -> Any:
    return batch


def task_position(stage_key: str) -> str | None:
    """``op/task/batch`` for the Ray Data task running this batch, stable across task retries
    (the guard keys its ledger reports by it, so a retried task replaces its counts). None
    outside a Ray Data task."""
    from ray.data._internal.execution.interfaces.task_context import TaskContext

    ctx = TaskContext.get_current()
    if ctx is None:
        return None
    # A fresh TaskContext arrives with every task attempt, so a retried task counts from zero.
    seqs = ctx.__dict__.setdefault("_bulkinfer_batches", {})
    seq = seqs.get(stage_key, 0)
    seqs[stage_key] = seq + 1
    return f"{ctx.op_name}/{ctx.task_idx}/{seq}"


@contextlib.contextmanager
def first_parquet_reader() -> Any:
    """Within the block, ``read_parquet`` builds Ray Data's first (streaming) Parquet reader.

    Its second reader lists files in a task that asks for a whole CPU (waiting forever behind
    actor pools that hold the rest) and reads a 1,000,000-row file as one block
    (benchmarks/RESULTS.md). The dataset keeps a copy of the context.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    previous = getattr(context, "use_datasource_v2", None)
    if previous is not None:
        context.use_datasource_v2 = False
    try:
        yield
    finally:
        if previous is not None:
            context.use_datasource_v2 = previous


def stats_summary(ds: Any) -> Any | None:
    """The executed dataset's stats summary (after a write, Ray keeps it on ``_write_ds``)."""
    executed = getattr(ds, "_write_ds", None) or ds
    return executed._get_stats_summary()


def first_output_callback(on_first_output: Any, armed: Any) -> type:
    """An execution callback class that calls ``on_first_output(time, rows)`` the first time
    the job's last data stage has handed rows on (``armed()`` says whether to look yet), with
    ``time.perf_counter()`` and the rows handed on by then.

    Ray Data calls ``DataContext.custom_execution_callback_classes`` after every scheduling
    step of its streaming executor; the callback reads the executor's topology.
    """
    from ray.data._internal.execution.execution_callback import ExecutionCallback

    class _FirstOutputCallback(ExecutionCallback):
        def on_execution_step(self, executor: Any) -> None:
            if not armed():
                return
            op = list(executor._topology)[-1]
            if op.name.startswith("Write") and op.input_dependencies:
                op = op.input_dependencies[0]  # rows out of the last stage, not files
            rows = op.metrics.row_outputs_taken
            if rows > 0:
                on_first_output(time.perf_counter(), rows)

    return _FirstOutputCallback


def bootstrap_address(address: str) -> str | None:
    """``host:port`` of the GCS that ``ray.init(address=...)`` would join, or None if there is
    none (``auto`` with no RAY_ADDRESS and no cluster started on this machine)."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address)


def mute_no_free_cpu_warning() -> None:
    """Keep Ray Data from warning, once per process, that "the Dataset job will hang unless
    more CPUs are freed up" when it starts executing while no CPU is free (``dataset.py``,
    ``log_once("cpu_warning")``). With bulkinfer's plans that is the normal state a moment
    after the actor pools start (they hold every CPU but the one kept for reads and writes), so
    every first job printed it. A job that really cannot get CPUs fails after
    ``run.stall_timeout_s`` with an error that says so. Marks the warning as already shown."""
    from ray.util.debug import log_once

    log_once("cpu_warning")
