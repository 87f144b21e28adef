"""The planner's choice of actors x threads for CPU actor stages whose concurrency is unset."""

from __future__ import annotations

import pytest
from kit import job_config

from pipeline.plan.planner import plan_job
from pipeline.plan.shares import ACTOR_MEMORY_SHARE, Cluster
from plugins.predictors.sentence_embedding import SentenceEmbedding

GIB = 2**30


def config(**stage) -> dict:
    predictor = {"type": "sentence_embedding", "params": {"input_column": "data"}, "stage": stage}
    return job_config(["a", "b"], predictor=predictor, run={"dry_run": True})


def nodes(*cpus: float, memory: float = 64 * GIB) -> Cluster:
    """A Ray cluster of nodes with these CPUs, each reporting ``memory``."""
    found = tuple({"CPU": c, "GPU": 0.0, "memory": memory} for c in cpus)
    return Cluster(cpus=sum(cpus), gpus=0, memory=memory * len(cpus), nodes=found)


def stage_and_note(cfg: dict, cluster: Cluster):
    """The predictor's stage settings as it runs (its layout's) and the layout's note on it."""
    plan = plan_job(cfg, cluster)
    note = next(n for n in plan.layout.notes if n.startswith("predictor: ") and "actor" in n)
    return plan.layout.settings(plan.maps[-1]), note


def worker_bytes() -> int:
    return SentenceEmbedding.worker_memory(SentenceEmbedding.Params())


def test_the_embedding_predictor_gets_one_single_thread_actor_per_core():
    stage, note = stage_and_note(config(), nodes(2))
    assert (stage.concurrency, stage.num_threads, stage.num_cpus) == (2, 1, 0.5)
    assert "one single-thread actor per core (2 core(s)" in note
    stage, _ = stage_and_note(config(), nodes(16))
    assert (stage.concurrency, stage.num_threads) == (16, 1)


def test_where_memory_holds_fewer_actors_the_cores_become_threads():
    per_worker = worker_bytes()
    memory = 3.5 * per_worker / ACTOR_MEMORY_SHARE  # room for 3 workers in the pool's share
    stage, note = stage_and_note(config(), nodes(16, memory=memory))
    assert (stage.concurrency, stage.num_threads) == (3, 5)
    assert "memory allows 3" in note and "shared out as threads" in note


def test_a_users_concurrency_or_num_threads_wins():
    stage, note = stage_and_note(config(concurrency=1), nodes(2))
    assert (stage.concurrency, stage.num_threads) == (1, 2)
    assert "planned:" not in note
    stage, note = stage_and_note(config(num_threads=2), nodes(8))
    assert (stage.concurrency, stage.num_threads) == (4, 2)
    assert "one per 2 cores (predictor.stage.num_threads" in note
    stage, _ = stage_and_note(config(concurrency=3, num_threads=2), nodes(8))
    assert (stage.concurrency, stage.num_threads) == (3, 2)


def test_a_users_stage_memory_is_the_size_the_planner_fits():
    stage, note = stage_and_note(config(memory=8 * GIB), nodes(8, memory=32 * GIB))
    assert (stage.concurrency, stage.num_threads) == (2, 4)  # 16 GiB for the pool: 2 x 8 GiB
    assert "memory allows 2 at about 8.0 GiB each" in note


def test_every_node_holds_its_own_share_of_actors():
    stage, _ = stage_and_note(config(), nodes(4, 4, 8))
    assert (stage.concurrency, stage.num_threads) == (16, 1)
    per_worker = worker_bytes()
    small = 1.5 * per_worker / ACTOR_MEMORY_SHARE  # one worker fits on each node
    stage, _ = stage_and_note(config(), nodes(4, 4, memory=small))
    assert (stage.concurrency, stage.num_threads) == (2, 4)


def test_gpu_stages_and_stages_of_unknown_memory_keep_one_actor():
    stage, note = stage_and_note(
        config(num_gpus=1, batch_size=8), Cluster(8, 1, nodes=({"CPU": 8, "GPU": 1},))
    )
    assert (stage.concurrency, stage.min_workers) == (None, 1)
    assert "planned:" not in note
    hub = config()
    hub["predictor"]["params"]["model"] = "some-team/not-a-local-folder"  # no weights to weigh
    stage, note = stage_and_note(hub, nodes(8))
    assert (stage.concurrency, stage.num_threads) == (1, 8)
    assert "memory per worker unknown" in note


def test_cores_other_actor_pools_hold_are_left_to_them():
    cfg = config()
    cfg["preprocessors"] = [
        {
            "type": "rename_columns",
            "params": {"mapping": {"data": "text"}},
            "stage": {"compute": "actors", "concurrency": 2, "num_threads": 2},
        }
    ]
    cfg["predictor"]["params"]["input_column"] = "text"
    stage, _ = stage_and_note(cfg, nodes(8))
    assert (stage.concurrency, stage.num_threads) == (4, 1)  # 8 cores, 4 held by the other pool


@pytest.mark.parametrize("cluster", [nodes(2), nodes(16), nodes(4, 4)])
def test_the_fingerprint_does_not_depend_on_the_machine(cluster):
    assert plan_job(config(), cluster).fingerprint == plan_job(config(), nodes(2)).fingerprint
