"""Device choice: the GPU Ray assigned to the actor when the stage reserves one, else the CPU.

This machine has no GPU, so the Ray here declares one (num_gpus=1): an actor that reserves it
gets Ray's GPU id and CUDA_VISIBLE_DEVICES, as on a GPU node, and the plugin then asks torch for
CUDA. That is as far as the GPU path goes on a CPU-only torch; benchmarks/gpu_check.py runs
the rest on a machine with a GPU.
"""

from __future__ import annotations

import pytest
from contracts import run_job

from pipeline.contract.errors import ConfigError
from plugins.models import choose_device


@pytest.mark.parametrize(
    ("requested", "gpu_ids", "cuda", "env", "expected"),
    [
        ("cpu", [0], True, None, "cpu"),  # an explicit device always wins
        (None, None, True, None, "cuda"),  # outside Ray: any visible GPU
        (None, None, False, None, "cpu"),
        (None, [], True, None, "cpu"),  # in Ray without a reserved GPU: never a GPU
        (None, ["0"], True, "0", "cuda:0"),  # Ray narrowed visibility to the assigned GPU
        (None, [3], True, None, "cuda:3"),  # visibility not narrowed: the assigned index
    ],
)
def test_choose_device(monkeypatch, requested, gpu_ids, cuda, env, expected):
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert choose_device(requested, gpu_ids, cuda) == expected


def test_a_reserved_gpu_without_cuda_in_torch_is_a_config_error():
    with pytest.raises(ConfigError) as error:
        choose_device(None, [0], cuda_available=False)
    assert error.value.key == "predictor.stage.num_gpus"


@pytest.fixture(scope="module")
def ray_with_a_declared_gpu():
    from kit import start_local_ray

    ray = start_local_ray(num_gpus=1)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


ROWS = [{"id": i, "text": f"sentence {i}"} for i in range(4)]


def _job(model, **params):
    return {
        "type": "hf_pipeline",
        "params": {"task": "text-classification", "model": str(model), **params},
        "stage": {"num_gpus": 1, "batch_size": 2},
    }


def test_an_actor_with_a_gpu_puts_the_model_on_it(
    ray_with_a_declared_gpu, tiny_classifier, tmp_path
):
    """The actor sees Ray's GPU and asks torch for CUDA; a CPU-only torch says no, clearly."""
    with pytest.raises(ConfigError) as error:
        run_job(_job(tiny_classifier), ROWS, tmp_path / "out")
    assert error.value.key == "predictor.stage.num_gpus"
    assert "cannot use CUDA" in error.value.message


def test_an_explicit_device_overrides_the_assigned_gpu(
    ray_with_a_declared_gpu, tiny_classifier, tmp_path
):
    out = run_job(_job(tiny_classifier, device="cpu"), ROWS, tmp_path / "out")
    assert out.num_rows == len(ROWS)


def test_without_num_gpus_the_model_stays_on_the_cpu(
    ray_with_a_declared_gpu, tiny_classifier, tmp_path
):
    job = _job(tiny_classifier)
    job["stage"] = {"num_gpus": 0}
    out = run_job(job, ROWS, tmp_path / "out")
    assert out.num_rows == len(ROWS)
