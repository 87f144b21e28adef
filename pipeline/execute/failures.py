"""What went wrong in a Ray job, as the user's error: a stage's, a stalled job, a broken file.

Ray wraps what a task raises in its own exception types (and keeps an actor's start-up error only as
text); :func:`user_errors` finds the :class:`~pipeline.contract.errors.BulkInferError` inside, or
asks the job's ledger for the one a stage reported, or the source for the input file at fault.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pipeline.contract import errors
from pipeline.contract.errors import BulkInferError, PlanError
from pipeline.contract.source import WHOLE_SOURCE, Source, WorkUnit

if TYPE_CHECKING:
    from pipeline.plan.model import Plan

_REMOTE_ERROR = re.compile(r"pipeline\.contract\.errors\.(\w+): (.+)")
_KEY = re.compile(r"[\w.\[\]-]+")


def find_user_error(exc: BaseException) -> BulkInferError | None:
    """The first :class:`BulkInferError` in an exception's cause chain (Ray wraps task errors)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BulkInferError):
            # Raised in a Ray task, it arrives as Ray's dual class (RayTaskError and the
            # error's own); its ``cause`` is the error as raised.
            cause = getattr(current, "cause", None)
            return cause if isinstance(cause, BulkInferError) else current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return _error_in_message(exc)


def _error_in_message(exc: BaseException) -> BulkInferError | None:
    """Rebuild a BulkInferError that Ray only kept as text.

    An error raised in an actor's ``__init__`` (a model that cannot load) reaches the driver as
    ``ActorDiedError``, which keeps the original exception only in its message.
    """
    found = _REMOTE_ERROR.findall(str(exc))
    if not found:
        return None
    name, text = found[-1]
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BulkInferError)):
        return None
    key, sep, message = text.partition(": ")
    if sep and _KEY.fullmatch(key):
        return cls(message, key=key)
    return cls(text)


class HideTracebacks(logging.Filter):
    """Drop the traceback Ray Data logs with a failed task, and the lines it logs as the error
    reaches the driver: bulkinfer reports the error itself, as one line where it is the user's,
    else with its traceback (every line stays in Ray Data's log file, which is written before
    the console).

    Those lines would mislead: an error a read or write task raised (a missing input column)
    is announced as one "in Ray Data or Ray Core internal code" to report to the Ray project.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _announces_failure(record):
            return False
        record.exc_info = None
        record.exc_text = None
        return True


def _announces_failure(record: logging.LogRecord) -> bool:
    """Ray Data's console lines about an error on its way to the driver: ``Exception occurred
    in user code ...`` / ``... in Ray Data or Ray Core internal code ...`` and ``Full stack
    trace:`` (logger ``ray.data.exceptions``), and ``An exception was raised from a task of
    operator ... Dataset execution will now abort ...``."""
    if record.name == "ray.data.exceptions":
        return True
    return record.levelno >= logging.ERROR and "Dataset execution will now abort" in str(record.msg)


def hide_tracebacks() -> None:
    """Install :class:`HideTracebacks` on Ray Data's console handlers (once)."""
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler" and not any(
            isinstance(f, HideTracebacks) for f in handler.filters
        ):
            handler.addFilter(HideTracebacks())


def _stall(exc: BaseException) -> BaseException | None:
    from ray.data.exceptions import ExecutionTimeoutError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ExecutionTimeoutError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def user_errors(
    plan: Plan, source: Source, unit: WorkUnit | None, ledger: Any = None
) -> Iterator[None]:
    """Turn what goes wrong while reading or running into a :class:`BulkInferError` where the
    cause is the user's: an error a stage raised, a stalled job, an input file that is broken."""
    try:
        yield
    except BulkInferError:
        raise
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is None and ledger is not None:
            import ray

            with contextlib.suppress(Exception):
                user_error = ray.get(ledger.failure.remote(), timeout=30)
        if user_error is not None:
            raise user_error from None
        if _stall(exc) is not None:
            raise PlanError(
                f"no stage made progress for {plan.run.stall_timeout_s:g} s, so the job was "
                "stopped (a stage waits for resources the cluster never frees, or a stage "
                "hangs). Raise it if a stage is legitimately that slow.",
                key="run.stall_timeout_s",
            ) from None
        try:
            explained = source.explain_read_error(plan.source.params, unit or WHOLE_SOURCE)
        except Exception:  # the diagnosis must not hide the original error
            explained = None
        if explained is not None:
            raise explained from None
        raise
