"""The Ray this process runs jobs on: start or connect (failing fast), its resources, stopping.

Jobs run one after another in one process (a Hydra multirun with the basic launcher) share the
Ray instance the first one started; a job whose ``ray`` settings differ restarts it. A cluster
that does not answer at ``ray.address`` is a clear error within seconds, not Ray's minute of
retries; only a Ray Client connection whose server died starting (a Ray race) is tried again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray

from pipeline.contract.errors import PlanError
from pipeline.contract.settings import RaySettings
from pipeline.execute import ray_internals
from pipeline.plan.model import Cluster

log = logging.getLogger("bulkinfer")

#: Ray settings that decide how :func:`connect` starts or connects to Ray.
_START_KEYS = ("address", "num_cpus", "num_gpus", "object_store_memory", "runtime_env")
#: What this process started Ray with (None: Ray was not started here, or was shut down).
_started_with: dict[str, Any] | None = None
#: How long a cluster address may take to accept a connection.
CONNECT_TIMEOUT_S = 5.0
#: Connections tried at a ``ray://`` address whose per-client server died while starting.
CLIENT_START_ATTEMPTS = 3
#: What Ray Client answers when that server died: a race between fork and gRPC's threads in
#: Ray's client proxy (ray-project/ray#63202, about 7% of connections), not a fault of the job.
_CLIENT_SERVER_DIED = "Starting Ray client server failed"
#: How long a finished job lets Ray Data release its actors before killing them.
RELEASE_GRACE_S = 3.0
#: How long a finished job waits for Ray to confirm its actors are gone.
RELEASE_TIMEOUT_S = 30.0


def _start_settings(settings: RaySettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in _START_KEYS}


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a PlanError naming ``ray.address`` unless something accepts a connection there.

    ``auto`` is resolved as ``ray.init`` would (``RAY_ADDRESS``, then a cluster started with
    ``ray start`` on this machine); ``ray://host:port`` is the Ray Client server.
    """
    if address.startswith("ray://"):
        target = address[len("ray://") :]
    else:
        try:
            target = ray_internals.bootstrap_address(address)
        except (ValueError, ConnectionError) as exc:
            raise PlanError(f"cannot use {address!r}: {exc}", key="ray.address") from None
        if target is None:
            raise PlanError(
                f"no running Ray cluster found for address {address!r} (no RAY_ADDRESS, and "
                "none started with `ray start` on this machine). Start one, or set "
                "ray.address=HOST:PORT, or drop ray=cluster to run on an embedded Ray.",
                key="ray.address",
            )
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        if isinstance(exc, TimeoutError):
            cause = f"no answer within {timeout_s:g} s"
        else:
            cause = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = address if target == address else f"{address} ({target})"
        raise PlanError(
            f"nothing answers at {where}: {cause}. Start the cluster (`ray start --head`) or "
            "fix ray.address.",
            key="ray.address",
        ) from None


def connect(settings: RaySettings, ray_logs: bool = False) -> bool:
    """Start (or connect to) Ray unless this process already has it; True if it started now.

    A Ray that someone else initialised (a notebook, a test) is reused as it is. Ray logs
    warnings and errors only, unless ``ray_logs`` (``run.ray_logs``) asks for its INFO lines.
    """
    global _started_with
    if ray.is_initialized():
        if _started_with is None or _started_with == _start_settings(settings):
            log.info("reusing the Ray instance this process already has")
            return False
        log.info("ray settings changed since Ray was started; restarting it")
        shutdown_ray()
    kwargs: dict[str, Any] = {
        "include_dashboard": settings.include_dashboard,
        "logging_level": logging.INFO if ray_logs else logging.WARNING,
        "log_to_driver": True,
    }
    if settings.runtime_env:
        kwargs["runtime_env"] = settings.runtime_env
    if settings.address:
        check_reachable(settings.address)
        kwargs["address"] = settings.address
    else:
        # "local": always a new embedded Ray. Without it, ray.init() joins any cluster that
        # `ray start` left running on this machine, which is not what ray.address=null means.
        kwargs["address"] = "local"
        for name in ("num_cpus", "num_gpus", "object_store_memory"):
            if getattr(settings, name) is not None:
                kwargs[name] = getattr(settings, name)
    _init(kwargs, settings.address)
    _started_with = _start_settings(settings)
    return True


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Keep the process's SIGTERM handler through ``ray.init``, which replaces it (with
    ``sys.exit``; its core worker also installs a handler that aborts the process with a stack
    trace). The command line's handler makes SIGTERM stop a job as Ctrl-C does (the staging
    kept, one line, status 130); without this a scheduler's SIGTERM aborted the driver."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:  # None: set from C, not Python; leave Ray's then
            signal.signal(signal.SIGTERM, handler)


def _init(kwargs: dict[str, Any], address: str | None) -> None:
    """``ray.init(**kwargs)``; a Ray Client server that died starting is tried again.

    Nothing of the job has run when that happens, so a new connection (and a new server) is
    safe. Raises PlanError naming ``ray.address`` for any other connection failure, or when
    all :data:`CLIENT_START_ATTEMPTS` connections met a dead server.
    """
    for attempt in range(1, CLIENT_START_ATTEMPTS + 1):
        try:
            with _sigterm_kept():
                ray.init(**kwargs)
            return
        except ConnectionError as exc:
            retry = (
                attempt < CLIENT_START_ATTEMPTS
                and (address or "").startswith("ray://")
                and _CLIENT_SERVER_DIED in str(exc)
            )
            if not retry:
                raise PlanError(
                    f"cannot connect to Ray at {address!r}: {exc}", key="ray.address"
                ) from None
            log.warning(
                "the Ray Client server for this job died while starting (a known Ray race, "
                "ray-project/ray#63202); connecting again (attempt %d of %d)",
                attempt + 1,
                CLIENT_START_ATTEMPTS,
            )


def cluster(address: str | None) -> Cluster:
    """The resources of the Ray this process is connected to, and of each alive node."""
    totals = ray.cluster_resources()
    nodes = tuple(dict(n["Resources"]) for n in ray.nodes() if n.get("Alive"))
    return Cluster(
        cpus=totals.get("CPU", 0.0),
        gpus=totals.get("GPU", 0.0),
        memory=totals.get("memory", float("inf")),
        nodes=nodes,
        name=f"Ray cluster at {address}" if address else "local Ray",
    )


def shutdown_ray() -> None:
    """Stop the Ray this process started (disconnect from a cluster); call once, at the end."""
    global _started_with
    _started_with = None
    if ray.is_initialized():
        try:
            ray_internals.stop_autoscaler_monitor()
        except Exception as exc:  # a moved internal: Ray then shuts down as usual, 1 s slower
            log.debug("could not stop the autoscaler monitor first: %s", exc)
        ray.shutdown()


def wait_for_actors_released(
    grace_s: float = RELEASE_GRACE_S, timeout_s: float = RELEASE_TIMEOUT_S
) -> bool:
    """Make sure this driver's map-stage actors are gone; False if Ray still reports some.

    Ray Data releases a dataset's actor pools by dropping its handles: at the end of a full
    execution, but after a partial one (``take``, as the show sink does) only when the executor
    is garbage-collected, and after a failed one only when nothing holds the failure's traceback
    any more (a logging handler that keeps records, as pytest's does, holds it for good). So:
    collect garbage, wait ``grace_s``, then kill what is left, since the job is over either way.
    The next job of a sweep must start with the model actors (and their CPUs) of this one gone.
    """
    start = time.monotonic()
    collected = killed = False
    while True:
        try:
            alive = ray_internals.live_map_workers()
        except Exception as exc:  # cannot tell: Ray Data releases them in its own time
            log.debug("cannot list the job's actors: %s", exc)
            return False
        if not alive:
            return True
        elapsed = time.monotonic() - start
        if not collected:
            gc.collect()  # an executor left behind by a partial read holds its actor pool
            collected = True
            continue
        if not killed and elapsed > grace_s:
            log.info("killing %d actor(s) the finished job left: %s", len(alive), alive)
            ray_internals.kill_actors(list(alive))
            killed = True
        if elapsed > timeout_s:
            log.warning("actors still alive %.0f s after the job: %s", timeout_s, alive)
            return False
        time.sleep(0.05)


def configure_output(ray_logs: bool) -> None:
    """Ray Data's own output on the driver: off by default, on with ``run.ray_logs``.

    Off: no progress bars (Ray Data's per-operator bars on a terminal, its "Running Dataset"
    block every 10 s otherwise; bulkinfer prints its own line in rows,
    :mod:`pipeline.execute.progress_line`), no execution plan at the start, and Ray Data's
    console shows warnings and errors only (its INFO lines still go to its log files in the Ray
    session folder). On: all of them, as Ray Data prints them.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = ray_logs
    context.print_on_execution_start = ray_logs
    # Off also silences Ray Data's warnings that progress bars are disabled, and that their
    # operator names are truncated.
    logging.getLogger(ray_internals.PROGRESS_LOGGER).setLevel(
        logging.NOTSET if ray_logs else logging.ERROR
    )
    ray_internals.ray_data_console_level(logging.INFO if ray_logs else logging.WARNING)
