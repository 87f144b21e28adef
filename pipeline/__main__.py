"""The Hydra app: ``python -m pipeline [group=option ...] [key=value ...]``.

compose (Hydra) -> validate (pydantic) -> plan -> execute (Ray Data). Only this module knows Hydra.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.cli import report, sample_path
from pipeline.errors import BulkInferError, ConfigError
from pipeline.metrics import JobInfo, Recorder, sentence

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("bulkinfer")

#: Exit status of each job of this process's multirun that failed (the sweep carries on).
failed_jobs: list[int] = []

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


def run(cfg: DictConfig, job: JobInfo | None = None) -> Any:
    """Validate, plan and (unless dry-run) execute one job; user errors raise BulkInferError.

    With ``job.output_dir`` set, the run writes ``metrics.json`` there, also when it fails.
    """
    from pipeline.plan import build_plan, describe, local_budget

    started = time.perf_counter()
    recorder = Recorder(job)
    try:
        plan = recorder.plan = local_budget(build_plan(to_plain_config(cfg)))
        if plan.run.dry_run:
            print(describe(plan))
            recorder.dry_run()
            return None
        from pipeline.runner import ensure_ray, execute

        recorder.ray_started = ensure_ray(plan)
        result = execute(plan, started=started)
    except Exception as error:
        try:
            recorder.failed(error)
        except Exception as unwritten:  # never hide the job's own error behind this one
            log.warning("could not write metrics.json: %s", unwritten)
        raise
    metrics = recorder.completed(result)
    print(sentence(metrics, recorder.path))
    return result


def run_with_overrides(overrides: list[str], output_dir: str | Path | None = None) -> Any:
    """Compose the config as the command line would and run it in this process.

    For tests and notebooks; reuses a Ray instance this process already started. Keys that
    interpolate ``${hydra:...}`` (the default sink path) must be overridden. With ``output_dir``
    the run writes its ``metrics.json`` there.
    """
    job = JobInfo(output_dir=str(output_dir) if output_dir else None, overrides=list(overrides))
    with hydra.initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return run(hydra.compose("config", overrides=list(overrides)), job)


def _job_info() -> tuple[JobInfo, bool]:
    """This job's output folder and overrides from Hydra; True if it is part of a multirun."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    job = JobInfo(
        output_dir=hc.runtime.output_dir,
        overrides=list(hc.overrides.task),
        num=int(hc.job.num) if multirun else None,
        name=hc.job.name,
    )
    return job, multirun


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    """One job. In a multirun a failed job is recorded and the sweep goes on to the next."""
    job, multirun = _job_info()
    try:
        return run(cfg, job)
    except BulkInferError as error:
        status = report(error)
        if not multirun:
            sys.exit(status)
        failed_jobs.append(status)
    except Exception:
        if not multirun:
            raise
        log.exception("job #%s failed", job.num)
        failed_jobs.append(1)
    return None


def cli() -> int:
    """``python -m pipeline``: run the app, stop Ray at the very end, return the exit status.

    Jobs of a multirun share the Ray instance the first one started; it is shut down here, once,
    after the last job (and the sweep summary). A multirun with a failed job exits non-zero.
    """
    try:
        main()
    finally:
        if "pipeline.runner" in sys.modules:
            from pipeline.runner import shutdown_ray

            shutdown_ray()
    return failed_jobs[0] if failed_jobs else 0


if __name__ == "__main__":
    sys.exit(cli())
