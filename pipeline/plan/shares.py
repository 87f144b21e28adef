"""Sharing a Ray cluster between a job's actor pools, task stages and I/O, decided once.

The planner calls :func:`share_cluster` with the plan's steps as configured and the resources of
the cluster the job will run on (the local machine's for the embedded Ray and for every dry run,
the connected cluster's otherwise) and gets back the plan's :class:`~pipeline.plan.model.Layout`:
each map stage's CPUs, threads and actors, the read's tasks and blocks, the map batch windows and
the notes the dry run prints. The steps stay as configured. :func:`fit_windows` fits the layout's
windows to a known number of rows. Nothing here imports Ray.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

from pipeline.contract.errors import PlanError
from pipeline.contract.settings import AUTO_MAX_ROWS, RaySettings, StageSettings
from pipeline.plan.model import Cluster, Layout, Plan, StageLayout, Step

#: Smallest CPU share the planner gives a worker before it refuses the plan instead.
MIN_CPU_SHARE = 0.1
#: Rows an actor stage that sorts by length gets per call at the least: the pool of rows it
#: sorts before cutting it into model batches of ``stage.batch_size`` (benchmarks/RESULTS.md).
SORT_WINDOW_ROWS = 4096


#: Stage settings by stage key: how the map stages run, as far as :func:`share_cluster` has
#: decided (a stage's config, then the planner's choices over it).
Running = dict[str, StageSettings]


def _fmt(n: float) -> str:
    return f"{n:g}"


def _check_fits(maps: tuple[Step, ...], running: Running, cluster: Cluster) -> None:
    cpus, gpus, memory = cluster.cpus, cluster.gpus, cluster.memory
    for step in maps:
        s = running[step.key]
        if s.num_gpus > 0 and s.num_gpus * max(1, s.min_workers) > gpus:
            have = f"{_fmt(gpus)} GPU" + ("s" if gpus != 1 else "")
            raise PlanError(
                f"asks for {_fmt(s.num_gpus)} GPU per worker x {max(1, s.min_workers)} worker(s), "
                f"but the {cluster.name} has {have}. Set {step.key}.stage.num_gpus=0 to run on "
                "CPUs, or connect to a cluster with GPUs (ray.address).",
                key=f"{step.key}.stage.num_gpus",
            )
        if s.memory is not None and s.memory * max(1, s.min_workers) > memory:
            raise PlanError(
                f"asks for {s.memory:,} bytes per worker x {max(1, s.min_workers)} worker(s), but "
                f"the {cluster.name} has {memory:,.0f} bytes of memory for tasks and actors. "
                f"Lower {step.key}.stage.memory or the stage's concurrency.",
                key=f"{step.key}.stage.memory",
            )
        if s.num_cpus is not None and s.num_cpus > cpus:
            raise PlanError(
                f"asks for {_fmt(s.num_cpus)} CPUs per worker but the {cluster.name} has "
                f"{_fmt(cpus)}. Lower it to at most {_fmt(cpus)}.",
                key=f"{step.key}.stage.num_cpus",
            )


#: CPU an actor pool gives up so that the task stage before it keeps a different request.
FOLD_GAP = 0.01
#: Share of a node's memory the actors of one pool whose size the planner picks may fill
#: together (by the stage's ``worker_memory``); the rest is for Ray's object store, its own
#: processes and the read and write tasks.
ACTOR_MEMORY_SHARE = 0.5


def _sizes_itself(stage: StageSettings) -> bool:
    """Whether the planner picks this stage's actors and threads: an actor stage on CPUs whose
    ``concurrency`` neither the plugin nor the user set."""
    return stage.compute == "actors" and stage.concurrency is None and stage.num_gpus == 0


def machine_memory() -> float:
    """Bytes of physical memory of this machine (inf where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def size_pools(maps: tuple[Step, ...], cluster: Cluster) -> tuple[Running, dict[str, str]]:
    """Actors and threads of each CPU actor stage whose ``concurrency`` is unset.

    One single-thread actor per core (measured on 2 CPUs, benchmarks/RESULTS.md: two one-thread
    embedding actors beat one two-thread actor in every round, 38.9 against 41.9 s at 4,000
    sentences and 132.3 against 145.8 s at 20,000), as many as :data:`ACTOR_MEMORY_SHARE` of
    each node's memory holds at the stage's ``stage.memory``, else its plugin's
    :meth:`~pipeline.contract.stage.MapStage.worker_memory`; where memory holds fewer, the
    node's cores are shared out as threads. A stage's own ``num_threads`` is kept (then one
    actor per that many cores). Cores that other actor stages' threads take, and those of
    several such stages, are shared evenly. A stage whose worker memory is unknown keeps one
    actor (threads: see :func:`share_cluster`). A node's memory is what Ray reports for it, or,
    planning for this machine, its physical memory.

    Returns each map stage's settings by stage key (``concurrency`` and ``num_threads`` set where
    the planner chose them; the steps are left as configured) and, per stage key, the words that
    say why (appended to the stage's note in the layout).
    """
    running = {st.key: st.stage for st in maps}
    sizing = [st for st in maps if _sizes_itself(st.stage)]
    if not sizing or not math.isfinite(cluster.cpus) or cluster.cpus <= 0:
        return running, {}
    taken = sum(
        st.stage.min_workers * (st.stage.num_threads or 1)
        for st in maps
        if st.stage.compute == "actors" and not _sizes_itself(st.stage)
    )
    share = max(1.0, cluster.cpus - taken) / cluster.cpus / len(sizing)
    nodes = cluster.nodes or ({"CPU": cluster.cpus},)
    notes: dict[str, str] = {}
    for step in sizing:
        s = step.stage
        per_worker = s.memory or step.plugin.worker_memory(step.params)
        if not per_worker:
            running[step.key] = s.model_copy(update={"concurrency": 1})
            notes[step.key] = (
                f"planned: 1 actor (memory per worker unknown; set {step.key}.stage.memory "
                "or concurrency for more)"
            )
            continue
        threads = s.num_threads or 1
        actors, cores, limited = 0, 0, []
        for node in nodes:
            node_cores = math.floor(node.get("CPU", 0.0) * share + 1e-9)
            if node_cores < 1:
                continue
            memory = node.get("memory") or machine_memory()
            fit = math.floor(memory * ACTOR_MEMORY_SHARE / per_worker)
            by_cores = max(1, node_cores // threads)
            if fit < by_cores:
                limited.append(memory)
            actors += max(1, min(by_cores, fit))
            cores += node_cores
        actors = max(1, actors)
        if s.num_threads is None:
            threads = max(1, cores // actors)
        running[step.key] = s.model_copy(update={"concurrency": actors, "num_threads": threads})
        if limited:
            why = (
                f"memory allows {actors} at about {_gib(per_worker)} each "
                f"({ACTOR_MEMORY_SHARE:.0%} of {_gib(min(limited))} per node), so the "
                f"{cores} cores are shared out as threads"
            )
        elif s.num_threads is not None:
            why = f"one per {threads} cores ({step.key}.stage.num_threads; {cores} core(s))"
        else:
            why = (
                f"one single-thread actor per core ({cores} core(s); about {_gib(per_worker)} each)"
            )
        notes[step.key] = f"planned: {why}"
    return running, notes


def _would_fold(tasks: StageSettings, actor_cpus: float, actor_gpus: float) -> bool:
    """Whether Ray Data would fold this task stage into the actor pool after it.

    Ray Data 2.60 fuses a task map into the next actor map when their CPU and GPU requests are
    equal; the task stage's work then runs inside the actors, one batch after the other with
    the model, instead of beside it on the CPUs the actors leave free (the seed's "preprocess
    batch N+1 while the model runs batch N"). Measured: 300 images through decode + resize/crop
    + a ResNet on 2 CPUs took 30.7 s folded and 19.8 s apart.
    """
    return (
        tasks.compute == "tasks"
        and tasks.num_cpus == actor_cpus
        and tasks.num_gpus == actor_gpus
        and actor_cpus > FOLD_GAP + MIN_CPU_SHARE
    )


def share_cluster(maps: tuple[Step, ...], ray: RaySettings, cluster: Cluster) -> Layout:
    """Share ``cluster`` between actor pools, task stages and I/O so the job can always progress.

    Actor pools hold their CPUs for the whole job. If they took every CPU, Ray Data could never
    schedule a read or write task and would wait forever, so the planner keeps ``ray.io_cpus``
    free (at most half the cluster; a whole CPU by default, because some of Ray Data's own
    tasks, such as the file listing of its Parquet reader in Ray 2.60, ask for one), gives actor
    stages without an explicit ``num_cpus`` an equal share of the rest (at most one CPU each),
    sets each actor's native threads so that together they cover the cluster's cores (logical
    CPU shares and threads are separate decisions), caps task stages at what stays free, and
    refuses plans that cannot fit. A stage's own ``num_cpus`` and ``num_threads`` are kept. An
    actor pool right after a task stage that would ask for the same CPUs gets
    :data:`FOLD_GAP` less, so that Ray Data keeps the tasks beside the actors instead of
    folding them in (:func:`_would_fold`).

    An actor stage on CPUs without ``concurrency`` gets its actors and threads from
    :func:`size_pools` first (one single-thread actor per core where memory allows).

    Returns the :class:`~pipeline.plan.model.Layout` with all of it (each stage's CPUs, threads
    and actors; the read's tasks and blocks; the map batch windows; the notes); ``maps`` are
    left as configured.
    """
    running, sized = size_pools(maps, cluster)
    _check_fits(maps, running, cluster)
    cpus = cluster.cpus
    pools = [st.key for st in maps if st.stage.compute == "actors"]
    actors = [running[key] for key in pools]
    fixed = sum(s.num_cpus * s.min_workers for s in actors if s.num_cpus)
    shared = [s for s in actors if s.num_cpus is None]
    io = min(ray.io_cpus, cpus / 2)
    left = cpus - io - fixed
    if left < 0 or (shared and left / sum(s.min_workers for s in shared) < MIN_CPU_SHARE):
        held = ", ".join(
            f"{key}: {s.min_workers} actor(s) x "
            f"{'shared' if s.num_cpus is None else _fmt(s.num_cpus)} CPU"
            for key, s in zip(pools, actors, strict=True)
        )
        raise PlanError(
            f"the actor pools ({held}) leave no CPU for reading and writing on a cluster of "
            f"{_fmt(cpus)} CPUs (the job would wait forever). Lower a stage's concurrency, give "
            f"it a smaller num_cpus (fractions are fine, e.g. 0.5), or lower ray.io_cpus "
            f"(now {_fmt(ray.io_cpus)}).",
            key=f"{pools[-1]}.stage" if pools else "ray.io_cpus",
        )
    share = 0.0
    if shared:
        workers = sum(s.min_workers for s in shared)
        share = min(1.0, math.floor(left / workers * 100) / 100)
    free = cpus - fixed - share * sum(s.min_workers for s in shared)

    notes: list[str] = []
    actor_workers = sum(s.min_workers for s in actors)
    for i, step in enumerate(maps):
        s = running[step.key]
        threads_note = ""
        if step.key in sized and s.num_threads is not None:
            threads_note = f", {s.num_threads} thread(s) each; {sized[step.key]}"
        elif step.key in sized:
            threads_note = f"; {sized[step.key]}"
        if s.compute == "actors" and s.num_threads is None and math.isfinite(cpus):
            # Measured on 2 cores (benchmarks/RESULTS.md): the actors' threads together should
            # cover every core; read/write tasks are short and need no core of their own.
            s = s.model_copy(update={"num_threads": max(1, int(cpus // actor_workers))})
            threads_note = f", {s.num_threads} thread(s) each" + threads_note
        if s.compute == "actors" and s.num_cpus is None:
            mine, apart = share, ""
            before = running[maps[i - 1].key] if i else None
            if before is not None and _would_fold(before, share, s.num_gpus):
                mine, apart = round(share - FOLD_GAP, 2), f"; apart from {maps[i - 1].key}'s tasks"
            s = s.model_copy(update={"num_cpus": mine})
            notes.append(
                f"{step.key}: {s.min_workers} actor(s) x {_fmt(mine)} CPU (shared{apart})"
                + threads_note
            )
        elif s.compute == "actors":
            notes.append(
                f"{step.key}: {s.min_workers} actor(s) x {_fmt(s.num_cpus)} CPU (set)"
                + threads_note
            )
        else:
            task_cpus = s.num_cpus if s.num_cpus is not None else min(1.0, free)
            if task_cpus > free + 1e-9:
                raise PlanError(
                    f"tasks need {_fmt(task_cpus)} CPU each but actor pools leave {_fmt(free)} of "
                    f"{_fmt(cpus)} CPUs free; lower it or the actor pools' size.",
                    key=f"{step.key}.stage.num_cpus",
                )
            how = "set" if s.num_cpus is not None else "shared"
            s = s.model_copy(update={"num_cpus": task_cpus})
            notes.append(f"{step.key}: tasks x {_fmt(task_cpus)} CPU ({how})")
        running[step.key] = s
    io_cpus = round(min(1.0, free), 2)
    notes.append(f"read/write tasks: {_fmt(io_cpus)} CPU each")
    read_tasks = max(1, math.floor(free / io_cpus + 1e-9))
    stages = {
        key: StageLayout(s.num_cpus, s.num_threads, s.concurrency) for key, s in running.items()
    }
    layout = Layout(io_cpus, stages=stages)
    check_placement(maps, layout, cluster)
    layout, window_notes = _windows(maps, layout)
    layout, block_notes = _blocks(maps, layout, read_tasks)
    return replace(layout, notes=(*notes, *window_notes, *block_notes))


def map_batch_rows(step: Step) -> int | None:
    """Rows Ray hands one call of an actor stage: its model batch, or, for a stage that sorts
    by length, a window of at least :data:`SORT_WINDOW_ROWS` rows (whole model batches), so the
    batch size a user sets stays the model's batch size and sorting still has rows to sort.
    Task stages get whole blocks (they fuse with the read) and cut them themselves."""
    s = step.stage
    if s.compute == "tasks" or s.batch_size is None:
        return None
    base = AUTO_MAX_ROWS if s.batch_size == "auto" else s.batch_size
    if not step.plugin.sorts_by_length():
        return base
    return max(base, math.ceil(SORT_WINDOW_ROWS / base) * base)


def fit_windows(plan: Plan, rows: int, layout: Layout | None = None) -> Layout:
    """``layout`` (default: ``plan.layout``) for ``rows`` rows: each actor stage that sorts by
    length gets equal windows, as many for each of its actors (the layout's ``concurrency``, the
    lower bound of an autoscaling pool), each at most the planned window and a whole number of
    model batches (or less than one batch, where the unit holds less than a batch for each
    actor). The read's blocks follow the first stage's window.

    Without it, 4,000 rows made one 4,096-row window that one actor of two embedded alone
    (74.6 s against 56.2 s for one actor, benchmarks/RESULTS.md); 20,000 rows made five
    windows, three for one actor and two for the other. A stage without a fixed batch size
    (``auto``, ``null``) keeps the planned size. Returns ``layout`` itself for no rows.
    """
    layout = layout if layout is not None else plan.layout
    if rows <= 0:
        return layout
    batches = dict(layout.map_batches)
    for step in plan.maps:
        s, window = step.stage, layout.map_batches.get(step.key)
        if not (window and s.compute == "actors" and isinstance(s.batch_size, int)):
            continue
        if not step.plugin.sorts_by_length():
            continue
        workers = layout.settings(step).min_workers
        count = workers * math.ceil(rows / (workers * window))
        size = math.ceil(rows / count)
        if size > s.batch_size:  # whole model batches; a smaller input still feeds every actor
            size = math.ceil(size / s.batch_size) * s.batch_size
        batches[step.key] = min(window, size)
    first = plan.maps[0].key if plan.maps else None
    blocks = layout.rows_per_block
    if blocks and first is not None and blocks == layout.map_batches.get(first):
        blocks = batches[first]
    return replace(layout, map_batches=batches, rows_per_block=blocks)


def _windows(maps: tuple[Step, ...], layout: Layout) -> tuple[Layout, list[str]]:
    """``layout`` with each map stage's batch rows (:func:`map_batch_rows`), and the notes on
    the stages that sort by length."""
    batches: dict[str, int | None] = {}
    notes: list[str] = []
    for step in maps:
        rows = batches[step.key] = map_batch_rows(step)
        if step.plugin.sorts_by_length() and step.stage.batch_size is not None:
            pool = f"windows of up to {rows} rows" if rows else "each block"
            notes.append(
                f"{step.key}: {pool} sorted by length, model batches of "
                f"{step.stage.batch_size} rows"
            )
    return replace(layout, map_batches=batches), notes


def _blocks(maps: tuple[Step, ...], layout: Layout, read_tasks: int) -> tuple[Layout, list[str]]:
    """Read with as many tasks as can run at once; cut blocks for a first stage of actors.

    Ray Data reads a small file as one block and an actor pool hands a block to one actor, so an
    8,000-row Parquet file kept one actor of two busy while the other idled. Blocks of one batch
    each spread over every actor of every stage; a batch is also the unit the stage works on, so
    nothing is cut twice. A first stage of tasks is left uncut: its tasks fuse with the read (and
    the write) and cut their blocks into batches themselves, so blocks never travel through the
    object store (see :mod:`pipeline.execute.compile`). The read gets ``read_tasks`` tasks (those
    that fit in the CPUs the actor pools leave; file sources use no more than they have files)
    instead of Ray's default of about 200: Ray cut a 1,000,000-row, one-row-group Parquet file into
    134 blocks that way, each later a write task and a file, and took 3-4 s where one streaming read
    task took 0.6 s. ``batch_size: auto`` uses its largest probed size; ``null`` (whole blocks)
    leaves the source's blocks alone. Returns the layout and its note on blocks (if any).
    """
    first = maps[0] if maps else None
    if first is None or first.stage.batch_size is None:
        return layout, []
    if first.stage.compute == "tasks":
        note = f"blocks: read in up to {read_tasks} task(s), each fused with {first.key}'s tasks"
        return replace(layout, read_tasks=read_tasks), [note]
    rows = layout.map_batches[first.key]
    note = (
        f"blocks: read in up to {read_tasks} task(s), cut into blocks of up to {rows} rows "
        f"(one map batch of {first.key})"
    )
    return replace(layout, rows_per_block=rows, read_tasks=read_tasks), [note]


def worker_resources(stage: StageSettings) -> dict[str, float]:
    """Ray resources one worker of a stage (after its share is given) asks for, by resource name."""
    need: dict[str, float] = {"CPU": stage.num_cpus or 0.0, "GPU": stage.num_gpus}
    if stage.memory:
        need["memory"] = float(stage.memory)
    for name, amount in (stage.ray_remote_args.get("resources") or {}).items():
        need[name] = float(amount)
    accelerator = stage.ray_remote_args.get("accelerator_type")
    if accelerator:
        need[f"accelerator_type:{accelerator}"] = 0.001
    return {k: v for k, v in need.items() if v > 0}


def _resource_key(step: Step, resource: str) -> str:
    fixed = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
    if resource in fixed:
        return f"{step.key}.stage.{fixed[resource]}"
    if resource.startswith("accelerator_type:"):
        return f"{step.key}.stage.ray_remote_args.accelerator_type"
    return f"{step.key}.stage.ray_remote_args.resources.{resource}"


def _fits(node: dict[str, float], need: dict[str, float]) -> int:
    """How many workers asking for ``need`` one node can hold."""
    counts = [math.floor(node.get(name, 0.0) / amount + 1e-9) for name, amount in need.items()]
    return min(counts, default=1_000_000)


def check_placement(maps: tuple[Step, ...], layout: Layout, cluster: Cluster) -> None:
    """Refuse a stage whose worker no node can hold, or whose actor pool the nodes cannot, as
    ``layout`` runs it.

    Ray Data would otherwise wait forever for a worker that can never be placed. A node's
    ``memory`` is checked only where the cluster reports it (a running Ray does).
    """
    nodes = list(cluster.nodes)
    if not nodes:
        return
    for step in maps:
        s = layout.settings(step)
        need = worker_resources(s)
        if not all("memory" in node for node in nodes):
            need.pop("memory", None)
        for name, amount in need.items():
            best = max((node.get(name, 0.0) for node in nodes), default=0.0)
            if best + 1e-9 < amount:
                have = (
                    f"the largest node has {_fmt(best)}"
                    if best
                    else f"no node of the {cluster.name} has it"
                )
                raise PlanError(
                    f"each worker asks for {_fmt(amount)} of resource {name!r} but {have}; "
                    "the job would wait forever. Lower the request or run on a cluster that "
                    "has it (ray.address).",
                    key=_resource_key(step, name),
                )
        room = sum(_fits(node, need) for node in nodes)
        if room == 0 or (s.compute == "actors" and room < s.min_workers):
            raise PlanError(
                f"asks for {s.min_workers} actor(s) of {need} each, but the nodes of the "
                f"{cluster.name} hold only {room} such worker(s) at once; the job would wait "
                "forever. Lower the concurrency or the per-worker resources.",
                key=f"{step.key}.stage",
            )
