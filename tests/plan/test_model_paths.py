"""A model named by a local path is checked before the job: a path that does not exist is one
line naming the key (the run used to retry a model hub for 89 s first), a hub id stays a hub
id, and a job whose model is a local folder runs with the hubs' offline switches on."""

from __future__ import annotations

import copy

import pytest

from pipeline.contract.errors import DataError
from pipeline.plan.planner import plan_job
from pipeline.plan.report import describe
from plugins.models import OFFLINE

TEXTS = {"type": "items", "params": {"items": [{"id": 1, "text": "a"}]}}
IMAGES = {"type": "items", "params": {"items": [{"id": 1, "image": [[[0, 0, 0]]]}]}}

#: (source, preprocessors, predictor, the key that names the model) per plugin that loads one.
MODEL_STAGES = {
    "sentence_embedding": (TEXTS, [], {"type": "sentence_embedding"}, "predictor.params.model"),
    "hf_pipeline": (TEXTS, [], {"type": "hf_pipeline"}, "predictor.params.model"),
    "tokenize": (
        TEXTS,
        [{"type": "tokenize", "params": {}}],
        None,
        "preprocessors[0].params.tokenizer",
    ),
    "image_classification": (
        IMAGES,
        [],
        {"type": "image_classification", "params": {"input_column": "image"}},
        "predictor.params.model",
    ),
    "image_embedding": (
        IMAGES,
        [],
        {"type": "image_embedding", "params": {"input_column": "image"}},
        "predictor.params.model",
    ),
}


def job(plugin: str, model: str) -> dict:
    source, preprocessors, predictor, key = copy.deepcopy(MODEL_STAGES[plugin])
    block = preprocessors[0] if preprocessors else predictor
    block.setdefault("params", {})[key.rsplit(".", 1)[1]] = model
    return {
        "source": source,
        "preprocessors": preprocessors,
        "predictor": predictor,
        "sink": {"type": "show", "params": {}},
        "run": {"dry_run": True},
    }


@pytest.fixture
def models_here(tmp_path, monkeypatch):
    """A working folder with ``models/minilm`` in it, as a user's project has."""
    (tmp_path / "models" / "minilm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("plugin", list(MODEL_STAGES))
def test_a_local_model_path_with_a_typo_is_refused_before_the_job(models_here, plugin):
    with pytest.raises(DataError) as caught:
        plan_job(job(plugin, "models/minlm"))
    assert caught.value.key == MODEL_STAGES[plugin][3]
    assert caught.value.message == (
        "model folder 'models/minlm' does not exist (models/ is a folder here, so this names a "
        "path, not a model hub id). Did you mean 'models/minilm'?"
    )


@pytest.mark.parametrize(
    "model", ["./minilm", "/nowhere/minilm", "~/nowhere-bulkinfer/minilm", "a/b/minilm"]
)
def test_a_value_that_can_only_be_a_path_is_refused_when_it_does_not_exist(models_here, model):
    with pytest.raises(DataError, match=f"model folder '{model}' does not exist") as caught:
        plan_job(job("sentence_embedding", model))
    assert caught.value.key == "predictor.params.model"


def test_a_file_is_not_a_model_folder(models_here):
    (models_here / "models" / "minilm" / "config.json").write_text("{}")
    with pytest.raises(DataError, match="is a file; a model is a folder saved with"):
        plan_job(job("hf_pipeline", "models/minilm/config.json"))


@pytest.mark.parametrize("plugin", list(MODEL_STAGES))
def test_a_hub_id_stays_a_hub_id_and_the_job_stays_online(models_here, plugin):
    plan = plan_job(job(plugin, "someorg/somemodel"))  # no such folder: a hub id
    assert plan.env_vars == {}
    assert "runtime_env" not in plan.io().ray_remote_args
    assert "  env:" not in describe(plan)


@pytest.mark.parametrize("plugin", list(MODEL_STAGES))
def test_a_local_model_folder_runs_the_whole_job_offline(models_here, plugin):
    plan = plan_job(job(plugin, "models/minilm"))
    assert plan.env_vars == OFFLINE == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # The read and write tasks carry the same runtime_env as the map stages (see compile.py),
    # so Ray Data still fuses them.
    assert plan.io().ray_remote_args["runtime_env"] == {"env_vars": OFFLINE}
    assert "  env: HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1 (every task and actor" in describe(plan)


def test_the_packaged_default_model_is_neither_refused_nor_a_path(models_here):
    plan = plan_job(job("sentence_embedding", "sentence-transformers/all-MiniLM-L6-v2"))
    assert plan.env_vars == {}


def test_torch_module_files_and_labels_are_checked_before_the_job(models_here):
    config = job("sentence_embedding", "x")
    config["source"] = {"type": "items", "params": {"items": [{"id": 1, "x": 0.5}]}}
    config["predictor"] = {
        "type": "torch_module",
        "params": {"model_file": "models/net.pt", "input_columns": ["x"]},
    }
    with pytest.raises(DataError, match="file does not exist: models/net.pt") as caught:
        plan_job(config)
    assert caught.value.key == "predictor.params.model_file"
    (models_here / "models" / "net.pt").write_bytes(b"")
    config["predictor"]["params"]["labels"] = "models/labels.txt"
    with pytest.raises(DataError, match="labels file does not exist") as caught:
        plan_job(config)
    assert caught.value.key == "predictor.params.labels"


def test_an_llm_token_counting_tokenizer_must_be_a_local_folder(models_here):
    config = job("sentence_embedding", "x")
    config["predictor"] = {
        "type": "openai_chat",
        "params": {
            "base_url": "http://127.0.0.1:1/v1",
            "model": "served-model",
            "prompt": "{text}",
            "tokenizer": "models/minlm",
        },
    }
    with pytest.raises(DataError, match="model folder 'models/minlm' does not exist") as caught:
        plan_job(config)
    assert caught.value.key == "predictor.params.tokenizer"
    config["predictor"]["params"]["tokenizer"] = "org/tokenizer"
    with pytest.raises(DataError, match="'org/tokenizer' is not a local folder"):
        plan_job(config)
    config["predictor"]["params"]["tokenizer"] = "models/minilm"
    assert plan_job(config).maps[-1].params.tokenizer == "models/minilm"
