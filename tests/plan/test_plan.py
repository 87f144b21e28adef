"""Validation and planning without Ray: every error names its key; the shares always add up."""

from __future__ import annotations

import copy

import pytest

from pipeline.contract.errors import ConfigError, PlanError
from pipeline.plan.model import StageLayout
from pipeline.plan.planner import plan_job
from pipeline.plan.report import describe
from pipeline.plan.shares import Cluster

BASE = {
    "source": {"type": "items", "params": {"items": ["a", "b"]}},
    "preprocessors": [],
    "predictor": {"type": "sentence_embedding", "params": {"input_column": "data"}, "stage": {}},
    "sink": {"type": "show", "params": {}},
    "ray": {},
    "run": {"dry_run": True},
}


def config(**stage) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["predictor"]["stage"].update(stage)
    return cfg


def cluster(cpus: float = 2, gpus: float = 0, memory: float = float("inf")) -> Cluster:
    """One node of this size (Ray reports memory; without it, memory is not checked)."""
    node = {"CPU": cpus, "GPU": gpus} | ({"memory": memory} if memory != float("inf") else {})
    return Cluster(cpus=cpus, gpus=gpus, memory=memory, nodes=(node,))


@pytest.fixture(scope="module")
def booster(tmp_path_factory) -> str:
    """A saved XGBoost booster (planning reads its objective)."""
    import numpy as np
    import xgboost

    path = tmp_path_factory.mktemp("xgb") / "m.json"
    data = xgboost.DMatrix(np.array([[0.0], [1.0]]), label=[0.0, 1.0])
    xgboost.train({"objective": "reg:squarederror", "nthread": 1}, data, 1).save_model(path)
    return str(path)


def planned(cfg: dict, on: Cluster | None = None):
    return plan_job(cfg, on or cluster())


def error_for(cfg: dict) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        planned(cfg)
    return err.value


def test_stage_settings_merge_plugin_defaults_with_the_config():
    plan = planned(config(batch_size=32))
    stage = plan.maps[0].stage
    assert stage.batch_size == 32
    assert stage.compute == "actors"  # a predictor defaults to an actor pool


@pytest.mark.parametrize(
    ("stage", "key", "says"),
    [
        ({"batch_size": -1}, "predictor.stage.batch_size", "greater than 0"),
        (
            {"batch_format": "arrow"},
            "predictor.stage.batch_format",
            "'numpy', 'pandas' or 'pyarrow'",
        ),
        ({"compute": "gpu"}, "predictor.stage.compute", "'actors' or 'tasks'"),
        ({"concurrency": {"min": 3, "max": 1}}, "predictor.stage.concurrency", "must not exceed"),
        ({"num_gpus": 1, "batch_size": None}, "predictor.stage", "batch_size is required"),
        ({"bogus": 1}, "predictor.stage.bogus", "unknown key"),
        ({"ray_remote_args": {"num_cpus": 2}}, "predictor.stage", "not in ray_remote_args"),
    ],
)
def test_bad_stage_settings_name_the_key_and_what_is_allowed(stage, key, says):
    error = error_for(config(**stage))
    assert error.key == key
    assert says in str(error)


def test_unknown_plugin_params_list_the_allowed_keys():
    cfg = config()
    cfg["predictor"]["params"]["modle"] = "x"
    error = error_for(cfg)
    assert error.key == "predictor.params.modle"
    assert "allowed keys: model, input_column" in str(error)


def test_an_unknown_top_level_key_is_an_error():
    cfg = config()
    cfg["predictr"] = {}
    assert error_for(cfg).key == "predictr"


@pytest.mark.parametrize(
    ("where", "key", "says"),
    [
        (("sink",), "sink.parms", "(did you mean 'params'?); allowed keys: type, params, stage"),
        (("preprocessors",), "preprocessors[0].stag", "(did you mean 'stage'?)"),
    ],
)
def test_a_misspelt_key_inside_a_stage_names_the_closest_key(where, key, says):
    cfg = config()
    misspelt = {"type": "rename_columns", "params": {}, key.rpartition(".")[2]: {}}
    if where == ("preprocessors",):
        cfg["preprocessors"] = [misspelt]
    else:
        cfg["sink"][key.rpartition(".")[2]] = {"path": "x"}
    error = error_for(cfg)
    assert error.key == key
    assert says in str(error)


@pytest.mark.parametrize("where", [("source",), ("predictor", "params"), ("preprocessors",)])
def test_configs_cannot_name_python_code_to_instantiate(where):
    cfg = config()
    target = {"_target_": "os.system", "command": "true"}
    if where == ("preprocessors",):
        cfg["preprocessors"] = [target]
        key = "preprocessors[0]._target_"
    elif len(where) == 1:
        cfg["source"]["_target_"] = "os.system"
        key = "source._target_"
    else:
        cfg["predictor"]["params"]["loader"] = target
        key = "predictor.params.loader._target_"
    error = error_for(cfg)
    assert error.key == key
    assert "register it under an entry-point group" in str(error)


def test_the_plans_steps_are_as_configured_and_its_layout_says_how_they_run():
    """The planner's CPUs, threads and actors are the layout's; the steps keep the config (what
    the fingerprint covers); the dry run prints each stage as it runs."""
    plan = planned(config(), cluster(2, 0, 64 * 2**30))
    step = plan.maps[0]
    assert (step.stage.num_cpus, step.stage.num_threads, step.stage.concurrency) == (None,) * 3
    assert plan.layout.stages == {"predictor": StageLayout(0.5, 1, 2)}
    planner = {"num_cpus": 0.5, "num_threads": 1, "concurrency": 2}
    assert plan.layout.settings(step) == step.stage.model_copy(update=planner)
    assert "concurrency=2, num_cpus=0.5" in describe(plan) and "num_threads=1" in describe(plan)
    assert any(note.startswith("predictor: 2 actor(s) x 0.5 CPU") for note in plan.layout.notes)


def test_the_seeds_two_actor_pool_shares_two_cpus_and_leaves_room_for_io():
    plan = planned(config(concurrency=2), cluster(2))
    assert plan.layout.stages["predictor"].num_cpus == 0.5
    # A whole CPU for I/O: Ray Data's own tasks (file listing) ask for one.
    assert plan.layout.io_cpus == 1.0


def test_actor_pools_that_would_starve_reads_and_writes_are_refused_with_what_to_change():
    with pytest.raises(PlanError) as err:
        planned(config(concurrency=2, num_cpus=1), cluster(2))
    assert err.value.key == "predictor.stage"
    assert "wait forever" in str(err.value) and "Lower a stage's concurrency" in str(err.value)


def test_a_gpu_stage_on_a_cluster_without_gpus_is_refused():
    with pytest.raises(PlanError) as err:
        planned(config(num_gpus=1, batch_size=8), cluster(2))
    assert err.value.key == "predictor.stage.num_gpus"
    assert "the Ray cluster has 0 GPUs" in str(err.value)


def test_a_dry_run_plans_for_this_machine_and_refuses_gpus_it_does_not_have(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(PlanError) as err:
        plan_job(config(num_gpus=1, batch_size=8))
    assert "the local machine has 0 GPUs" in str(err.value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    plan = plan_job(config(num_gpus=1, batch_size=8, concurrency=2))
    assert plan.cluster.gpus == 2 and plan.maps[0].stage.num_gpus == 1


def test_a_gpu_stage_fits_a_cluster_with_enough_gpus():
    plan = planned(config(num_gpus=1, batch_size=8, concurrency=2), cluster(8, 2))
    assert plan.maps[0].stage.num_gpus == 1


def test_more_cpus_per_worker_than_the_cluster_has_is_refused():
    with pytest.raises(PlanError, match="the Ray cluster has 2"):
        planned(config(num_cpus=5), cluster(2))


def test_the_seeds_memory_variant_fits_a_big_node():
    # 5 CPUs per actor, 3 actors: the seed's "at most 3 per 16-CPU node".
    plan = planned(config(num_cpus=5, concurrency=3), cluster(16))
    assert plan.maps[0].stage.num_cpus == 5 == plan.layout.stages["predictor"].num_cpus
    assert plan.layout.io_cpus == 1.0


def test_blocks_are_cut_to_a_map_batch_for_a_first_stage_of_actors(booster):
    cfg = config(batch_size=16)
    cfg["predictor"] = {"type": "xgboost", "params": {"model": booster}}
    cfg["predictor"]["stage"] = {"compute": "actors", "batch_size": 16}
    plan = planned(cfg, cluster(2))
    # One map batch per block.
    assert plan.layout.rows_per_block == 16 == plan.layout.map_batches["predictor"]
    assert plan.layout.read_tasks == 1


@pytest.mark.parametrize("batch_size", [16, 64, 256, 5000])
def test_the_batch_size_a_user_sets_is_the_model_batch_and_the_sort_window_the_planners(
    batch_size,
):
    """A stage that sorts by length gets windows of whole model batches, at least
    SORT_WINDOW_ROWS rows, whatever batch size the user sweeps: sorting never switches off."""
    from pipeline.plan.shares import SORT_WINDOW_ROWS

    plan = planned(config(batch_size=batch_size), cluster(2))
    window = plan.layout.map_batches["predictor"]
    assert plan.maps[0].stage.batch_size == batch_size  # the model's batch, as set
    assert window >= SORT_WINDOW_ROWS and window % batch_size == 0
    assert plan.layout.rows_per_block == window
    assert any(f"model batches of {batch_size} rows" in note for note in plan.layout.notes)


@pytest.mark.parametrize(
    ("rows", "concurrency", "batch_size", "windows"),
    [
        (4000, 1, 64, [4000]),  # one window: the whole input, sorted at once
        (4000, 2, 64, [2048, 1952]),  # one window each, not one window for one actor
        (20000, 1, 64, [4032] * 4 + [3872]),
        (20000, 2, 64, [3392] * 5 + [3040]),  # three each, not three and two
        (100, 2, 64, [50, 50]),  # less than a model batch each: still one window each
        (2, 2, 8, [1, 1]),  # the seed's quickstart: two prompts, two actors
        (4000, 2, 5000, [2000, 2000]),  # a model batch larger than the input
    ],
)
def test_a_unit_of_known_size_is_cut_into_equal_windows_for_every_actor(
    rows, concurrency, batch_size, windows
):
    from pipeline.plan.shares import fit_windows

    plan = planned(config(concurrency=concurrency, batch_size=batch_size), cluster(4))
    fitted = fit_windows(plan, rows)
    window = fitted.map_batches["predictor"]
    cut = [min(window, rows - start) for start in range(0, rows, window)]
    assert cut == windows
    assert len(cut) % concurrency == 0
    assert window % batch_size == 0 or window < batch_size  # whole batches, or less than one
    assert window <= plan.layout.map_batches["predictor"]
    assert fitted.rows_per_block == window  # the read's blocks are the windows
    # A layout for the rows: the read's tasks and CPUs as planned.
    assert (fitted.io_cpus, fitted.read_tasks) == (plan.layout.io_cpus, plan.layout.read_tasks)


def test_windows_are_kept_where_the_rows_are_unknown_or_the_stage_does_not_sort(booster):
    from pipeline.plan.shares import fit_windows

    unknown = planned(config(batch_size=64))
    assert fit_windows(unknown, 0) is unknown.layout
    assert unknown.layout.map_batches["predictor"] == 4096
    cfg = config(batch_size=16)
    cfg["predictor"] = {"type": "xgboost", "params": {"model": booster}}
    cfg["predictor"]["stage"] = {"compute": "actors", "batch_size": 16, "concurrency": 2}
    plan = planned(cfg, cluster(4))
    assert fit_windows(plan, 4000).map_batches == plan.layout.map_batches == {"predictor": 16}


def test_a_first_stage_of_tasks_leaves_blocks_whole_so_it_fuses_with_the_read():
    plan = planned(config(compute="tasks", batch_size=16), cluster(2))
    assert plan.layout.rows_per_block is None  # the tasks cut their blocks into batches
    assert plan.layout.read_tasks == 2
    assert any("fused with predictor" in note for note in plan.layout.notes)


def test_task_stages_get_no_more_cpu_than_the_actor_pools_leave():
    tasks_only = planned(config(compute="tasks"), cluster(2))
    assert tasks_only.layout.stages["predictor"].num_cpus == 1.0
    pooled = planned(config(concurrency=2), cluster(2))
    runs = [pooled.layout.settings(step) for step in pooled.maps]
    held = sum(s.num_cpus * s.min_workers for s in runs)
    assert held + pooled.layout.io_cpus <= 2


def test_an_explicit_task_cpu_request_that_cannot_fit_beside_the_actors_is_refused():
    assert planned(config(compute="tasks", num_cpus=2)).layout.stages["predictor"].num_cpus == 2
    cfg = config(concurrency=1, num_cpus=1)
    cfg["preprocessors"] = [
        {
            "type": "rename_columns",
            "params": {"mapping": {"data": "text"}},
            "stage": {"num_cpus": 1.5},
        }
    ]
    cfg["predictor"]["params"]["input_column"] = "text"
    with pytest.raises(PlanError, match="actor pools leave 1 of 2 CPUs free") as err:
        planned(cfg)
    assert err.value.key == "preprocessors[0].stage.num_cpus"


def test_the_plan_shares_the_cluster_once_and_keeps_the_users_own_settings():
    """A stage's own num_cpus and num_threads are the user's; the planner's shares say so."""
    plan = planned(config(concurrency=1, num_cpus=0.5, num_threads=3))
    assert plan.layout.stages["predictor"] == StageLayout(0.5, 3, 1)
    shared = planned(config(concurrency=2))
    assert any("(shared)" in note for note in shared.layout.notes)
    assert any("(set)" in note for note in plan.layout.notes)


def test_the_printed_plan_masks_credentials():
    cfg = config()
    cfg["source"] = {"type": "items", "params": {"items": [{"api_token": "s3cr3t", "data": "x"}]}}
    text = describe(planned(cfg))
    assert "s3cr3t" not in text and "***" in text


def test_the_fingerprint_follows_the_data_flow_not_the_execution_settings():
    a = planned(config(batch_size=8)).fingerprint
    b = planned(config(batch_size=8, concurrency=2)).fingerprint
    other = config(batch_size=8)
    other["predictor"]["params"]["normalize"] = True
    assert a != planned(other).fingerprint
    assert a == b  # how many actors run it does not change the output


def test_more_memory_than_the_cluster_has_is_refused():
    cfg = config(memory=8 * 2**30, concurrency=2)
    with pytest.raises(PlanError, match="Lower predictor.stage.memory") as err:
        planned(cfg, cluster(2, 0, 10 * 2**30))
    assert err.value.key == "predictor.stage.memory"
    assert planned(cfg, cluster(2, 0, 20 * 2**30)).maps[0].stage.memory


def test_an_actor_pool_after_a_task_stage_asks_for_other_cpus_so_ray_keeps_them_apart():
    """Ray Data folds a task map into the next actor map when both ask for the same CPUs; the
    planner leaves the pool 0.01 CPU less, so the CPU stage runs beside the model, not in it."""
    cfg = config(concurrency=1)
    cfg["preprocessors"] = [{"type": "rename_columns", "params": {"mapping": {"data": "text"}}}]
    cfg["predictor"]["params"]["input_column"] = "text"
    plan = planned(cfg, cluster(2))
    tasks, actors = (plan.layout.stages[step.key] for step in plan.maps)
    assert (tasks.num_cpus, actors.num_cpus) == (1.0, 0.99)
    assert any("apart from preprocessors[0]'s tasks" in note for note in plan.layout.notes)
    alone = planned(config(concurrency=1), cluster(2))
    assert alone.layout.stages["predictor"].num_cpus == 1.0
    two = copy.deepcopy(cfg)
    two["predictor"]["stage"]["concurrency"] = 2  # 0.5 CPU each: already apart
    assert planned(two, cluster(2)).layout.stages["predictor"].num_cpus == 0.5
    own = copy.deepcopy(cfg)
    own["predictor"]["stage"]["num_cpus"] = 1  # the user's own request is kept
    assert planned(own, cluster(2)).layout.stages["predictor"].num_cpus == 1
