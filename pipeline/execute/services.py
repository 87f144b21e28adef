"""A job's services: objects a map stage's workers share for one job, made on the driver.

A stage plugin names them in :meth:`~pipeline.contract.stage.MapStage.job_services` (the LLM
predictor's shared rate limiter, for one); the runner makes them once before the job and
closes them after it, done or failed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.plan.model import Plan

log = logging.getLogger("bulkinfer")


def start_services(plan: Plan) -> dict[str, dict[str, Any]]:
    """Stage key -> the objects its workers share for this job
    (:meth:`~pipeline.contract.stage.MapStage.job_services`), made once, on the driver."""
    services: dict[str, dict[str, Any]] = {}
    try:
        for step in plan.maps:
            made = step.plugin.job_services(step.params)
            if made:
                services[step.key] = dict(made)
    except BaseException:
        close_services(services)
        raise
    return services


def close_services(services: dict[str, dict[str, Any]]) -> None:
    """``close()`` every job service that has one (the job is over: done or failed)."""
    for made in services.values():
        for name, value in made.items():
            close = getattr(value, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # never hide the job's own outcome behind this
                    log.warning("bulkinfer: could not close job service %r: %s", name, exc)
