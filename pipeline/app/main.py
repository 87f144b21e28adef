"""The Hydra app: ``bulkinfer [group=option ...] [key=value ...]`` (or ``python -m pipeline``).

compose (Hydra) -> validate (pydantic) -> plan -> execute (Ray Data). Only this module knows Hydra.
Configs come from the package ``pipeline.conf`` (``pkg://pipeline.conf``), so an installed wheel
finds them exactly as a clone does.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from pipeline.app import configs
from pipeline.app.cli import STOPPED, report, sample_path, stop_signals
from pipeline.app.metrics import JobInfo, Recorder, sentence
from pipeline.app.overrides import one_line, relaxed
from pipeline.contract.errors import BulkInferError, ConfigError
from pipeline.contract.secrets import install_log_masking, mask_override, mask_secrets, mask_text

#: bulkinfer's own config folder on disk (tests read the files); Hydra reads ``configs.CONF_PATH``.
CONF_DIR = str(configs.CONF_DIR)
log = logging.getLogger("bulkinfer")

#: Exit status of each job of this process's multirun that failed (the sweep carries on).
failed_jobs: list[int] = []

if not OmegaConf.has_resolver("bulkinfer.sample"):
    OmegaConf.register_new_resolver("bulkinfer.sample", sample_path)


def _refuse_clash(group: str | None, option: str, key: str) -> None:
    """Refuse an option that two providers (packages, or a package and bulkinfer) both define."""
    clash = configs.clash_for(group, option)
    if clash is not None:
        raise ConfigError(
            f"option {option!r} is ambiguous: {clash.describe()}, and Hydra would read whichever "
            "comes first in the search path. Uninstall one of them or rename the file (a config "
            "package keeps its options under a folder named after its team, e.g. "
            "predictor/team_a/).",
            key=key,
        )


def check_choices(choices: dict[str, Any], config_name: str | None = None) -> None:
    """Refuse a job whose selected options (``hydra.runtime.choices``) clash between providers."""
    if config_name:
        _refuse_clash(None, config_name, "--config-name")
    for group, option in choices.items():
        if isinstance(option, str) and not group.startswith("hydra/"):
            _refuse_clash(group, option, group.replace("/", "."))


def _preprocessor_option(name: str, index: int) -> dict[str, Any]:
    """Load ``preprocessor/NAME.yaml`` (bulkinfer's or a config package's) for a list entry.

    Returned unresolved: its interpolations (``${predictor.params.model}``) resolve against the
    whole job config once it is spliced into the ``preprocessors`` list.
    """
    _refuse_clash("preprocessor", name, f"preprocessors[{index}]")
    try:
        cfg = hydra.compose(config_name=f"preprocessor/{name}")
    except Exception as exc:  # Hydra raises MissingConfigException and friends
        raise ConfigError(
            f"no preprocessor config named {name!r} in the config search path ({exc})",
            key=f"preprocessors[{index}]",
        ) from None
    body = cfg.get("preprocessor", cfg)
    return OmegaConf.to_container(body, resolve=False)


def _expand_preprocessors(cfg: DictConfig) -> DictConfig:
    """Replace names in ``preprocessors`` by their config group options (a copy of ``cfg``)."""
    stages = cfg.get("preprocessors")
    if stages is None:
        return cfg
    if not isinstance(stages, ListConfig):
        raise ConfigError("must be a list of preprocessor names or stages", key="preprocessors")
    raw = OmegaConf.to_container(stages, resolve=False)
    if not any(isinstance(s, str) for s in raw):
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.preprocessors = [
            _preprocessor_option(s, i) if isinstance(s, str) else s for i, s in enumerate(raw)
        ]
    return cfg


def to_plain_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations and the preprocessor shorthand into plain dicts and lists."""
    cfg = _expand_preprocessors(cfg)
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or None
        raise ConfigError(str(exc).splitlines()[0], key=key) from None
    config.pop("hydra", None)
    return config


def run(cfg: DictConfig, job: JobInfo | None = None) -> Any:
    """Validate, plan and (unless dry-run) execute one job; user errors raise BulkInferError.

    With ``job.output_dir`` set, the run writes ``metrics.json`` there, also when it fails. A dry
    run imports neither Ray nor any plugin the config does not name, so it is a cheap config
    check for CI (exit 0: valid, 2: the error on stderr).
    """
    from pipeline.contract.settings import RunSettings
    from pipeline.plan.planner import estimates, plan_job
    from pipeline.plan.report import describe
    from pipeline.plan.validation import validate_model

    started = time.perf_counter()
    recorder = Recorder(job)
    try:
        config = to_plain_config(cfg)
        if validate_model(RunSettings, config.get("run") or {}, "run").dry_run:
            plan = recorder.plan = plan_job(config)  # this machine's resources, no Ray
            print(describe(plan))
            for line in estimates(plan):
                print(line)
            recorder.dry_run()
            return None
    except Exception as error:
        _record_failure(recorder, error)
        raise
    from pipeline.execute.runner import run_job

    # Until the job has said how it ended: once its output is published a Ctrl-C no longer
    # interrupts it (the line would tell the user to resume a job that is done).
    with stop_signals() as stop:
        try:
            result = run_job(config, started=started, recorder=recorder, published=stop.published)
        except Exception as error:
            _record_failure(recorder, error)
            raise
        metrics = recorder.completed(result)
        for line in result.remarks():
            print(f"bulkinfer: {line}")
        print(sentence(metrics, recorder.path))
    if stop.stopping and job is not None and job.num is not None:  # a sweep stops here
        print(
            f"bulkinfer: the sweep stops after job #{job.num} (its output is published)",
            file=sys.stderr,
        )
        sys.exit(STOPPED)
    return result


def _record_failure(recorder: Recorder, error: Exception) -> None:
    try:
        recorder.failed(error)
    except Exception as unwritten:  # never hide the job's own error behind this one
        log.warning("could not write metrics.json: %s", unwritten)


def compose(overrides: list[str]) -> dict[str, Any]:
    """The resolved job config (plain data) the command line composes from ``overrides``.

    For tests and notebooks; keys that interpolate ``${hydra:...}`` (the default sink path)
    must be overridden.
    """
    with hydra.initialize_config_module(config_module=configs.CONF_PACKAGE, version_base="1.3"):
        cfg = hydra.compose("config", overrides=relaxed(list(overrides)))
        return to_plain_config(cfg)


def run_with_overrides(overrides: list[str], output_dir: str | Path | None = None) -> Any:
    """Compose the config as the command line would and run it in this process.

    For tests and notebooks; reuses a Ray instance this process already started. Keys that
    interpolate ``${hydra:...}`` (the default sink path) must be overridden. With ``output_dir``
    the run writes its ``metrics.json`` there.
    """
    job = JobInfo(output_dir=str(output_dir) if output_dir else None, overrides=list(overrides))
    with hydra.initialize_config_module(config_module=configs.CONF_PACKAGE, version_base="1.3"):
        cfg = hydra.compose("config", overrides=relaxed(overrides), return_hydra_config=True)
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        check_choices(choices)
        return run(cfg, job)


def mask_saved_configs(folder: Path) -> None:
    """Mask secret-looking values in the config files Hydra saved for the run (``.hydra/``)."""
    for path in (folder / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")):
        if not path.is_file():
            continue
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        masked = mask_secrets(data)
        if isinstance(masked, list):  # overrides.yaml: ["key=value", ...]
            masked = [mask_override(o) for o in masked]
        hydra_node = masked.get("hydra") if isinstance(masked, dict) else None
        if isinstance(hydra_node, dict):
            overrides = hydra_node.get("overrides", {})
            for which in ("task", "hydra"):
                if isinstance(overrides.get(which), list):
                    overrides[which] = [mask_override(o) for o in overrides[which]]
            job = hydra_node.get("job", {})
            if isinstance(job.get("override_dirname"), str):
                job["override_dirname"] = mask_text(job["override_dirname"])
        if masked != data:
            OmegaConf.save(OmegaConf.create(masked), path)


def _hydra_run_context() -> tuple[dict[str, Any], str | None]:
    """Mask what Hydra wrote and logs for this run; return its choices and primary config."""
    hc = HydraConfig.get()
    install_log_masking()
    if hc.output_subdir is not None:
        mask_saved_configs(Path(hc.runtime.output_dir) / hc.output_subdir)
    return OmegaConf.to_container(hc.runtime.choices), hc.job.config_name


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


@hydra.main(config_path=configs.CONF_PATH, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    """One job. In a multirun a failed job is recorded and the sweep goes on to the next."""
    job, multirun = _job_info()
    try:
        check_choices(*_hydra_run_context())
        return run(cfg, job)
    except BulkInferError as error:
        status = report(error)
        if not multirun or status == STOPPED:  # a stopped sweep stops
            sys.exit(status)
        failed_jobs.append(status)
    except KeyboardInterrupt:  # before the job ran (planning, starting Ray)
        print("bulkinfer: interrupted before the job started; nothing was written", file=sys.stderr)
        sys.exit(STOPPED)
    except Exception:
        if not multirun:
            raise
        log.exception("job #%s failed", job.num)
        failed_jobs.append(1)
    return None


def _run_hydra_app() -> None:
    """Run :func:`main`; Hydra's own config errors are one line and exit 2, like bulkinfer's.

    Hydra reports an unknown option or a malformed override itself, in a block with its search
    path, and exits 1; here they become one ``bulkinfer: error:`` line
    (:func:`pipeline.app.overrides.one_line`) and status 2, as for any other invalid config.
    """
    from hydra._internal import utils as hydra_utils  # hydra-core 1.3: where errors are reported

    hydra_report = getattr(hydra_utils, "run_and_report", None)
    if hydra_report is None:
        main()
        return

    def run_and_report(func: Any) -> Any:
        def recording() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as exc:
                print(f"bulkinfer: error: {one_line(exc)}", file=sys.stderr)
                raise SystemExit(ConfigError.exit_code) from None

        return hydra_report(recording)

    hydra_utils.run_and_report = run_and_report
    try:
        main()
    finally:
        hydra_utils.run_and_report = hydra_report


def cli() -> int:
    """``bulkinfer`` (``python -m pipeline``): run the app, stop Ray at the end, return the status.

    The ``bulkinfer`` console script calls this function; the wrapper pip writes exits with
    the status it returns.

    Jobs of a multirun share the Ray instance the first one started; it is shut down here, once,
    after the last job (and the sweep summary). A multirun with a failed job exits non-zero.
    """
    sys.argv[1:] = relaxed(sys.argv[1:])
    try:
        _run_hydra_app()
    finally:
        if "pipeline.execute.ray_session" in sys.modules:
            from pipeline.execute.ray_session import shutdown_ray

            shutdown_ray()
    return failed_jobs[0] if failed_jobs else 0


if __name__ == "__main__":
    sys.exit(cli())
