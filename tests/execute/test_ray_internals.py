"""One test per private Ray API hook (pipeline/execute/ray_internals.py): each fails loudly when a
Ray release moves or changes what bulkinfer relies on, instead of a job silently degrading."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pipeline.execute import ray_internals

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]  # each hook on a real Ray


def test_streaming_repartition_cuts_blocks_inside_the_read():
    import ray.data

    ds = ray.data.from_arrow(pa.table({"x": list(range(100))}))
    cut = ray_internals.streaming_repartition(ds, 10, num_cpus=0.5)
    blocks = list(cut.iter_internal_ref_bundles())
    assert sum(b.num_rows() for b in blocks) == 100
    assert max(b.num_rows() for b in blocks) <= 10
    assert "StreamingRepartition" in str(cut._logical_plan.dag)


def test_task_position_names_the_task_and_counts_its_batches():
    import ray.data

    def positions(batch):
        first = ray_internals.task_position("stage")
        second = ray_internals.task_position("stage")
        return {"first": [first] * len(batch["id"]), "second": [second] * len(batch["id"])}

    rows = ray.data.range(4, override_num_blocks=2).map_batches(positions).take_all()
    assert all(r["first"].endswith("/0") and r["second"].endswith("/1") for r in rows)
    assert len({r["first"] for r in rows}) == 2  # one per task
    assert ray_internals.task_position("stage") is None  # not in a Ray Data task


def test_live_map_workers_lists_this_drivers_pool_actors_and_kill_actors_ends_them():
    import ray.data

    class Slow:
        def __call__(self, batch):
            return batch

    ds = ray.data.range(8).map_batches(Slow, compute=ray.data.ActorPoolStrategy(size=1))
    iterator = iter(ds.iter_batches(batch_size=1))
    next(iterator)  # the pool is up and busy; the execution is left unfinished
    alive = ray_internals.live_map_workers()
    assert alive and all(name.startswith("MapWorker(") for name in alive.values())
    ray_internals.kill_actors(list(alive))
    import time

    deadline = time.monotonic() + 30
    while ray_internals.live_map_workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ray_internals.live_map_workers()
    del iterator


def test_stats_summary_and_the_first_output_callback_see_an_execution():
    import ray.data

    seen: list[tuple[float, int]] = []
    callback = ray_internals.first_output_callback(
        lambda at, rows: seen.append((at, rows)), lambda: not seen
    )
    context = ray.data.DataContext.get_current()
    context.custom_execution_callback_classes.append(callback)
    try:
        ds = ray.data.range(10).map_batches(lambda b: b)
        ds.materialize()
    finally:
        context.custom_execution_callback_classes.remove(callback)
    assert len(seen) == 1
    assert 0 < seen[0][1] <= 10
    summary = ray_internals.stats_summary(ds.materialize())
    assert summary is not None and hasattr(summary, "operators_stats")


def test_first_parquet_reader_switches_the_reader_only_inside_the_block(tmp_path):
    import pyarrow.parquet as pq
    import ray.data

    context = ray.data.DataContext.get_current()
    assert hasattr(context, "use_datasource_v2"), "Ray Data lost its reader switch"
    before = context.use_datasource_v2
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "a.parquet")
    with ray_internals.first_parquet_reader():
        assert context.use_datasource_v2 is False
        ds = ray.data.read_parquet(str(tmp_path / "a.parquet"))
    assert context.use_datasource_v2 == before
    assert ds.count() == 3


def test_bootstrap_address_resolves_what_ray_init_would_join(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_internals.bootstrap_address("127.0.0.1:6379").endswith(":6379")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    assert ray_internals.bootstrap_address("auto").endswith(":6380")


def test_stopping_the_autoscaler_monitor_of_an_embedded_node(tmp_path):
    """In a process of its own: the monitor exists for a node this process started."""
    import subprocess
    import sys

    code = (
        "import ray\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "from pipeline.execute import ray_internals\n"
        "print('FOUND', ray_internals.stop_autoscaler_monitor())\n"
        "ray.shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=os.environ
    )
    assert "FOUND True" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("source", "reader"),
    [
        ("parquet", "read_parquet"),
        ("csv", "read_csv"),
        ("json", "read_json"),
        ("text", "read_text"),
    ],
)
def test_file_sources_read_the_extensions_rays_readers_read(source, reader):
    """The sources list folders without importing Ray (plans and dry runs stay Ray-free), with
    the default extensions they copy from Ray Data's readers."""
    import inspect

    import ray.data

    from pipeline.plan import registry

    plugin = registry.load("source", source)
    default = inspect.signature(getattr(ray.data, reader)).parameters["file_extensions"].default
    assert plugin.file_extensions == (tuple(default) if default is not None else None)


def test_the_no_free_cpu_warning_is_shown_once_and_can_be_marked_shown():
    """Ray Data's "will hang unless more CPUs are freed up" warning is keyed "cpu_warning" in
    ray.util.debug.log_once: once marked, it is not printed again in this process."""
    import inspect

    import ray.data.dataset
    from ray.util.debug import log_once

    assert 'log_once("cpu_warning")' in inspect.getsource(ray.data.dataset)
    ray_internals.mute_no_free_cpu_warning()
    assert not log_once("cpu_warning")


def test_ray_data_console_level_quiets_the_console_and_keeps_the_log_files():
    """Ray Data's logger ``ray.data`` has a console handler and a session-file handler; only
    the console's level changes (the logger stays at DEBUG for the files)."""
    import logging

    import ray.data  # noqa: F401 - configures Ray Data's logging
    from ray.data._internal.logging import SessionFileHandler

    logger = logging.getLogger(ray_internals.RAY_DATA_LOGGER)
    try:
        assert ray_internals.ray_data_console_level(logging.WARNING)
        to_files = (SessionFileHandler, logging.FileHandler)
        console = [h for h in logger.handlers if not isinstance(h, to_files)]
        files = [h for h in logger.handlers if isinstance(h, SessionFileHandler)]
        assert console and files
        assert all(h.level == logging.WARNING for h in console)
        assert all(h.level < logging.INFO for h in files)
        assert logger.level == logging.DEBUG
    finally:
        ray_internals.ray_data_console_level(logging.INFO)
