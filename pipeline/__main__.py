"""The Hydra app: ``python -m pipeline [group=option ...] [key=value ...]``.

compose (Hydra) -> validate (pydantic) -> plan -> execute (Ray Data). Only this module knows Hydra.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.cli import report, sample_path
from pipeline.errors import BulkInferError, ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("bulkinfer")

if not OmegaConf.has_resolver("bulkinfer.sample"):
    OmegaConf.register_new_resolver("bulkinfer.sample", sample_path)


def _preprocessor_option(name: str, index: int) -> dict[str, Any]:
    """Load ``conf/preprocessor/NAME.yaml`` (or a config package's) for a list entry by name."""
    try:
        cfg = hydra.compose(config_name=f"preprocessor/{name}")
    except Exception as exc:  # Hydra raises MissingConfigException and friends
        raise ConfigError(
            f"no preprocessor config named {name!r} in the config search path ({exc})",
            key=f"preprocessors[{index}]",
        ) from None
    body = cfg.get("preprocessor", cfg)
    return OmegaConf.to_container(body, resolve=True)


def to_plain_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations and the preprocessor shorthand into plain dicts and lists."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or None
        raise ConfigError(str(exc).splitlines()[0], key=key) from None
    config.pop("hydra", None)
    stages = config.get("preprocessors") or []
    if not isinstance(stages, list):
        raise ConfigError("must be a list of preprocessor names or stages", key="preprocessors")
    config["preprocessors"] = [
        _preprocessor_option(s, i) if isinstance(s, str) else s for i, s in enumerate(stages)
    ]
    return config


def run(cfg: DictConfig) -> Any:
    """Validate, plan and (unless dry-run) execute one job; user errors raise BulkInferError."""
    from pipeline.plan import build_plan, describe, local_budget

    plan = local_budget(build_plan(to_plain_config(cfg)))
    if plan.run.dry_run:
        print(describe(plan))
        return None
    from pipeline.units import preflight

    preflight(plan)
    from pipeline.runner import ensure_ray, execute

    ensure_ray(plan)
    result = execute(plan)
    print(result.summary())
    return result


def run_with_overrides(overrides: list[str]) -> Any:
    """Compose the config as the command line would and run it in this process.

    For tests and notebooks; reuses a Ray instance this process already started. Keys that
    interpolate ``${hydra:...}`` (the default sink path) must be overridden.
    """
    with hydra.initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return run(hydra.compose("config", overrides=list(overrides)))


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    try:
        return run(cfg)
    except BulkInferError as error:
        sys.exit(report(error))


if __name__ == "__main__":
    main()
