"""Calls that reach a remote service (object storage, a catalog, a database) during planning.

A service with no route, no credentials or no answer must end the job in one line naming the key,
the location and the cause, within a bounded time, not in a traceback or a hang.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from pipeline.contract.errors import BulkInferError, DataError

T = TypeVar("T")

#: Seconds a planning-time call to a remote service may take before the job is refused.
REACH_TIMEOUT_S = 30.0


def reach(
    call: Callable[[], T],
    *,
    key: str,
    location: str,
    verb: str = "reach",
    timeout_s: float = REACH_TIMEOUT_S,
) -> T:
    """``call()``, which reaches ``location``.

    Raises:
        DataError: naming ``key``, ``location`` and the cause, when ``call`` raises anything but
            a BulkInferError (which passes as it is) or gives no answer within ``timeout_s``
            seconds (the call's thread is left to finish on its own).
    """
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bulkinfer-reach")
    try:
        return pool.submit(call).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise DataError(
            f"cannot {verb} {location}: no answer within {timeout_s:g} s (no route to the "
            "service, or it is not answering)",
            key=key,
        ) from None
    except BulkInferError:
        raise
    except Exception as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot {verb} {location}: {cause}", key=key) from None
    finally:
        pool.shutdown(wait=False)
