"""Defaults live once: in the plugin classes, StageSettings, RunSettings and RaySettings.

Every option in conf/ sets only what differs from those defaults (so ``describe`` tells what a
job runs), names only keys the models know, and every documented key can be overridden on the
command line without Hydra's ``+``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.app.main import CONF_DIR
from pipeline.app.main import compose as compose_config
from pipeline.contract.settings import RaySettings, RunSettings, StageSettings
from pipeline.contract.stage import MapStage
from pipeline.plan import registry

GROUPS = ("source", "preprocessor", "predictor", "sink")
OPTIONS = sorted(
    (group, path.stem) for group in GROUPS for path in (Path(CONF_DIR) / group).glob("*.yaml")
)


def _defaults(model: Any) -> dict[str, Any]:
    """Field name as written in configs -> its default (``<required>`` without one)."""
    found = {}
    for attr, field in model.model_fields.items():
        if field.is_required():
            value = "<required>"
        else:
            value = field.default_factory() if field.default_factory else field.default
        found[field.alias or attr] = value
    return found


def _is_placeholder(value: Any) -> bool:
    """``???`` (required here) or an interpolation (decided by another key)."""
    return isinstance(value, str) and (value == "???" or value.startswith("${"))


def _differing(values: dict[str, Any], defaults: dict[str, Any], where: str) -> None:
    for key, value in values.items():
        assert key in defaults, f"{where}.{key} is not a field"
        if not _is_placeholder(value):
            assert value != defaults[key], f"{where}.{key} restates the default {value!r}"


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_a_conf_option_sets_only_what_differs_from_its_plugin(group, option):
    raw = yaml.safe_load((Path(CONF_DIR) / group / f"{option}.yaml").read_text()) or {}
    if "type" not in raw:  # an option layered on another one (text_classification)
        assert raw.get("defaults"), f"{group}/{option} has neither a type nor defaults"
        return
    plugin = registry.load(group, raw["type"])
    _differing(raw.get("params") or {}, _defaults(plugin.Params), f"{group}/{option}: params")
    if issubclass(plugin, MapStage):
        stage = plugin.default_stage.model_dump()
        for key, value in (raw.get("stage") or {}).items():
            assert key in StageSettings.model_fields, f"{group}/{option}: stage.{key}"
            assert value != stage[key], f"{group}/{option}: stage.{key} restates {value!r}"
    else:
        assert "stage" not in raw


def test_run_and_ray_options_set_only_what_differs_from_their_settings():
    primary = yaml.safe_load((Path(CONF_DIR) / "config.yaml").read_text())
    _differing(primary.get("run") or {}, _defaults(RunSettings), "config.yaml: run")
    for path in (Path(CONF_DIR) / "ray").glob("*.yaml"):
        _differing(yaml.safe_load(path.read_text()) or {}, _defaults(RaySettings), path.name)


def compose(*overrides: str) -> dict[str, Any]:
    """The resolved config as the command line composes it."""
    return compose_config(list(overrides))


@pytest.mark.parametrize(
    ("override", "path", "value"),
    [
        ("predictor.stage.on_error=skip", ("predictor", "stage", "on_error"), "skip"),
        ("predictor.stage.max_error_rate=0.5", ("predictor", "stage", "max_error_rate"), 0.5),
        ("predictor.stage.num_threads=3", ("predictor", "stage", "num_threads"), 3),
        (
            "predictor.stage.ray_remote_args={resources: {gpu_box: 1}}",
            ("predictor", "stage", "ray_remote_args"),
            {"resources": {"gpu_box": 1}},
        ),
        ("predictor.params.normalize=true", ("predictor", "params", "normalize"), True),
        ("sink.params.mode=overwrite", ("sink", "params", "mode"), "overwrite"),
        ("run.resume=true", ("run", "resume"), True),
        ("ray.num_cpus=4", ("ray", "num_cpus"), 4),
    ],
)
def test_every_documented_key_is_overridden_without_a_plus(override, path, value):
    config = compose("sink.params.path=/tmp/out", override)
    node: Any = config
    for part in path:
        node = node[part]
    assert node == value


def test_a_misspelt_key_is_still_refused_with_the_keys_allowed():
    from pipeline.contract.errors import ConfigError
    from pipeline.plan.planner import plan_job

    with pytest.raises(ConfigError) as caught:
        plan_job(compose("sink.params.path=/tmp/out", "predictor.stage.on_eror=skip"))
    assert caught.value.key == "predictor.stage.on_eror"
    assert "unknown key" in caught.value.message
