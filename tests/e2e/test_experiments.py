"""conf/experiment/: each seed example composes, validates and (where it fits here) runs."""

from __future__ import annotations

import pytest
from contracts import continues_its_prompt, shown_rows

from pipeline.app.main import compose
from pipeline.contract.errors import ConfigError, PlanError
from pipeline.plan.planner import plan_job

EXPERIMENTS = [
    "quickstart",
    "quickstart_gpu",
    "cpu_memory",
    "cpu_preprocessing",
    "xgboost_checkpoint",
    "image_classification",
]


def plan_of(*overrides: str):
    """Compose as the command line would, validate and share the resources; no Ray."""
    return plan_job(compose(list(overrides)), inspect=False)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name):
    extra = ["ray.num_gpus=2"] if name == "quickstart_gpu" else []  # a local Ray of 2 GPUs
    if name == "image_classification":  # a Parquet sink: its default path is Hydra's run folder
        extra = ["sink.params.path=/tmp/predictions"]
    plan = plan_of(f"+experiment={name}", *extra)
    assert plan.maps[-1].key == "predictor"


def test_quickstart_is_the_seeds_first_example():
    plan = plan_of("+experiment=quickstart")
    assert plan.source.name == "items"
    assert plan.source.params.items == ["Complete this", "for me"]
    predictor = plan.maps[-1]
    assert (predictor.name, predictor.params.task) == ("hf_pipeline", "text-generation")
    assert predictor.params.call_kwargs == {"max_length": 20, "num_return_sequences": 1}
    assert (predictor.stage.compute, predictor.stage.concurrency) == ("actors", 2)
    assert (plan.sink.name, plan.sink.params.limit) == ("show", 1)


def test_gpu_variant_reserves_a_gpu_per_actor_and_sets_batch_size():
    stage = plan_of("+experiment=quickstart_gpu", "ray.num_gpus=2").maps[-1].stage
    assert (stage.num_gpus, stage.batch_size, stage.concurrency) == (1, 1, 2)
    with pytest.raises(ConfigError, match="batch_size is required"):
        plan_of("+experiment=quickstart_gpu", "predictor.stage.batch_size=null")


def test_gpu_variant_is_refused_where_this_machine_has_no_gpu(monkeypatch):
    """What a dry run here says: the plan is made for this machine, which has no GPU."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(PlanError, match="the local machine has 0 GPUs") as caught:
        plan_of("+experiment=quickstart_gpu")
    assert caught.value.key == "predictor.stage.num_gpus"


def test_gpu_variant_on_one_gpu_is_refused_until_concurrency_fits():
    with pytest.raises(PlanError, match="2 worker"):
        plan_of("+experiment=quickstart_gpu", "ray.num_gpus=1")
    assert plan_of("+experiment=quickstart_gpu", "ray.num_gpus=1", "predictor.stage.concurrency=1")


def test_cpu_memory_variant_fits_three_actors_of_five_cpus_on_a_16_cpu_node():
    plan = plan_of("+experiment=cpu_memory")
    stage = plan.maps[-1].stage
    assert (stage.num_cpus, stage.concurrency, plan.ray.num_cpus) == (5, 3, 16)
    with pytest.raises(PlanError, match="5 CPUs per worker"):
        plan_of("+experiment=cpu_memory", "ray.num_cpus=4")


def test_cpu_preprocessing_tokenizes_with_the_predictors_model():
    plan = plan_of("+experiment=cpu_preprocessing", "predictor.params.model=/models/m")
    tokenize, predictor = plan.maps
    assert (tokenize.name, tokenize.stage.compute) == ("tokenize", "tasks")
    assert tokenize.params.tokenizer == "/models/m"
    assert predictor.params.input_column == "input_ids"


def test_xgboost_experiment_is_the_seeds_ray_train_example():
    plan = plan_of("+experiment=xgboost_checkpoint")
    drop, predictor = plan.maps
    assert (drop.name, drop.params.columns) == ("drop_columns", ["target"])
    assert predictor.name == "xgboost"
    assert (predictor.stage.batch_format, predictor.stage.concurrency) == ("pandas", 2)


def test_cpu_memory_experiment_runs_on_this_machine(cli, tiny_gpt2):
    """A fresh local Ray that declares 16 CPUs: three actors of 5 CPUs each, as on one node."""
    done = cli(
        "+experiment=cpu_memory",
        f"predictor.params.model={tiny_gpt2}",
        "run.progress=false",
        "sink.params.max_chars=2000",  # the row whole, so that it parses back
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # limit: 1 shows whichever row Ray Data finishes first; its text continues its own prompt.
    (row,) = shown_rows(done.stdout)
    assert continues_its_prompt(row), row


def test_image_classification_is_the_seeds_resnet_example():
    """read images -> CPU preprocessing tasks -> the model on an actor pool -> labels; the
    model on GPUs when num_gpus is set."""
    out = "sink.params.path=/tmp/predictions"
    plan = plan_of("+experiment=image_classification", out)
    decode, transform, predictor = plan.maps
    assert (plan.source.name, decode.key, decode.stage.compute) == ("images", "source", "tasks")
    assert (transform.name, transform.stage.compute) == ("image_transform", "tasks")
    assert (predictor.name, predictor.stage.compute) == ("torch_module", "actors")
    assert predictor.params.input_columns == ["pixel_values"] and predictor.params.labels
    assert plan.sink.params.columns == ["path", "label", "score"]
    gpu = plan_of(
        "+experiment=image_classification",
        out,
        "predictor.stage.num_gpus=1",
        "predictor.stage.concurrency=2",
        "ray.num_gpus=2",
    ).maps[-1]
    assert (gpu.stage.num_gpus, gpu.stage.concurrency, gpu.stage.batch_size) == (1, 2, 256)
