"""Configs cannot run code, and credential-like values never reach printed or logged text."""

from __future__ import annotations

import io
import logging

import pytest
from conftest import run_cli
from pydantic import BaseModel, Field

from pipeline.contract.errors import ConfigError
from pipeline.contract.secrets import (
    MASK,
    MaskingFilter,
    install_log_masking,
    is_secret_key,
    mask_override,
    mask_secrets,
    mask_text,
)
from pipeline.plan.planner import plan_job
from pipeline.plan.report import describe
from pipeline.plan.validation import FORBIDDEN_KEYS, reject_code_references, validate_model


def job(**predictor_stage) -> dict:
    """A small valid job config (plain data, as after Hydra resolved it)."""
    return {
        "source": {"type": "items", "params": {"items": ["a", "b"], "column": "text"}},
        "predictor": {"type": "sentence_embedding", "stage": predictor_stage or None},
        "sink": {"type": "show"},
    }


# --- configs cannot run code ----------------------------------------------------------------


@pytest.mark.parametrize("key", FORBIDDEN_KEYS)
def test_hydra_instantiate_keys_are_refused_at_any_depth(key):
    config = job()
    config["predictor"]["params"] = {"layers": [{"ok": 1}, {key: "os.system"}]}
    with pytest.raises(ConfigError) as error:
        reject_code_references(config)
    assert error.value.key == f"predictor.params.layers[1].{key}"
    assert "register it under an entry-point group such as bulkinfer.predictors" in str(error.value)


def test_a_config_without_code_references_passes():
    reject_code_references(job(batch_size=8, ray_remote_args={"resources": {"x": 1}}))


def test_code_references_are_refused_before_any_plugin_is_looked_up():
    config = job()
    config["predictor"]["type"] = "no_such_plugin"  # would be a PluginNotFoundError
    config["sink"]["_target_"] = "shutil.rmtree"
    with pytest.raises(ConfigError) as error:
        plan_job(config, inspect=False)
    assert error.value.key == "sink._target_"


def test_target_from_the_command_line_is_refused_with_how_to_register(tmp_path):
    result = run_cli(
        "+predictor.params._target_=os.system",
        "run.dry_run=true",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2
    assert "bulkinfer: error: predictor.params._target_: _target_ is not allowed" in result.stderr
    assert "pyproject.toml" in result.stderr


def test_a_python_path_as_plugin_type_is_refused_with_how_to_register(tmp_path):
    result = run_cli(
        "predictor.type=my_team.models:Sentiment", "run.dry_run=true", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 2
    assert "never Python paths" in result.stderr
    assert "'bulkinfer.predictors'" in result.stderr


# --- secrets are masked -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["token", "hf_token", "API_TOKEN", "client_secret", "password", "db_passwd", "api_key",
     "apiKey", "aws_access_key_id", "private_key", "credentials", "Authorization",
     "storage_options"],
)  # fmt: skip
def test_credential_like_keys_are_secret(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["max_new_tokens", "tokenizer", "pad_token_id", "num_tokens", "model", "author", "key"],
)
def test_generation_and_ordinary_keys_are_not_secret(key):
    assert not is_secret_key(key)


def test_mask_secrets_masks_nested_keys_in_mappings_and_lists():
    value = {
        "model": "m",
        "max_new_tokens": 20,
        "runtime_env": {"env_vars": {"HF_TOKEN": "hf_abc", "PATH": "/bin"}},
        "sources": [{"url": "s3://b", "storage_options": {"key": "AK", "secret": "SK"}}],
        "password": None,  # unset stays visibly unset
    }
    assert mask_secrets(value) == {
        "model": "m",
        "max_new_tokens": 20,
        "runtime_env": {"env_vars": {"HF_TOKEN": MASK, "PATH": "/bin"}},
        "sources": [{"url": "s3://b", "storage_options": MASK}],
        "password": None,
    }
    assert value["runtime_env"]["env_vars"]["HF_TOKEN"] == "hf_abc"  # a copy, not in place


def test_mask_secrets_dumps_pydantic_models_first():
    class Params(BaseModel):
        api_token: str = Field(description="t")
        batch: int = Field(description="b")

    assert mask_secrets({"params": Params(api_token="x", batch=2)}) == {
        "params": {"api_token": MASK, "batch": 2}
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abc123 batch=4", "token=*** batch=4"),
        ('{"api_key": "abc", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("password: hunter2", "password: ***"),
        ("storage_options={'key': 'AK', 'secret': 'SK'} next", "storage_options=*** next"),
        ("max_new_tokens=20 tokenizer=gpt2", "max_new_tokens=20 tokenizer=gpt2"),
    ],
)
def test_mask_text_masks_values_of_secret_keys_in_free_text(text, expected):
    assert mask_text(text) == expected


def test_mask_override_masks_only_secret_keys():
    assert mask_override("+sink.params.storage_options.key=AK") == (
        "+sink.params.storage_options.key=***"
    )
    assert mask_override("predictor.stage.batch_size=8") == "predictor.stage.batch_size=8"


def test_log_records_from_any_logger_are_masked_by_the_handler_filter():
    stream = io.StringIO()
    root = logging.getLogger("test_config_safety")
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        install_log_masking(root)
        install_log_masking(root)  # idempotent
        assert sum(isinstance(f, MaskingFilter) for f in handler.filters) == 1
        logging.getLogger("test_config_safety.plugin").info("login with %s", "password=hunter2")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue().strip() == "login with password=***"


def test_validation_errors_do_not_echo_secret_values():
    class Params(BaseModel):
        api_token: int = Field(description="t")
        retries: int = Field(description="r")

    with pytest.raises(ConfigError) as error:
        validate_model(Params, {"api_token": "hf_s3cr3t", "retries": "many"}, "predictor.params")
    message = str(error.value)
    assert "hf_s3cr3t" not in message
    assert "(got 'many')" in message  # ordinary values are still shown


def test_the_printed_plan_masks_secrets_in_stage_remote_args():
    env = {"env_vars": {"HF_TOKEN": "hf_s3cr3t", "MODE": "fast"}}
    plan = plan_job(job(ray_remote_args={"runtime_env": env}), inspect=False)
    text = describe(plan)
    assert "hf_s3cr3t" not in text
    assert '"HF_TOKEN": "***"' in text and '"MODE": "fast"' in text
