"""A job's services: objects a map stage's workers share for one job, made on the driver.

A stage plugin names them in :meth:`~pipeline.contract.stage.MapStage.job_services` (the LLM
predictor's shared rate limiter, for one); the runner makes them once before the job and
closes them after it, done or failed. A stage that keeps a journal
(:attr:`~pipeline.contract.stage.MapStage.keeps_journal`) also gets ``services["journal"]`` once
the job's staging is open (:func:`with_journals`).
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


def with_journals(
    plan: Plan, services: dict[str, dict[str, Any]], store: Any
) -> dict[str, dict[str, Any]]:
    """``services`` with a journal (:class:`pipeline.output.journal.FolderJournal`) in the job
    store ``store`` for each stage that keeps one; a store that is not a folder (a database
    table's) has none, and such a stage keeps its results in memory for one run only."""
    from pipeline.output.journal import journal_for

    out = {key: dict(made) for key, made in services.items()}
    for step in plan.maps:
        if not getattr(step.plugin, "keeps_journal", False):
            continue
        journal = journal_for(store, step.key)
        if journal is None:
            log.warning(
                "bulkinfer: %s: the output's job store (%s) is not a folder, so its results "
                "are kept for this run only (a resumed run asks again)",
                step.key,
                getattr(store, "location", store),
            )
            continue
        out.setdefault(step.key, {})["journal"] = journal
    return out
