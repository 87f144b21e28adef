"""When to retry a request, and how long to wait first.

Retried: HTTP 408, 409, 425, 429 and every 5xx; timeouts; connections refused, reset or closed
without an answer; 2xx answers that are not the endpoint's JSON. Not retried: other 4xx (the
request itself is wrong: too long a prompt, a field the server refuses).

The wait before retry ``n`` (0-based) is the server's ``Retry-After`` (seconds, or an HTTP date)
when it sends one (plus up to 10 % more, never less, so that rows refused together spread out),
else "full jitter" exponential backoff: uniform in
``[0, min(max_s, base_s * 2**n)]``, so that workers that failed together do not come back
together.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRY_STATUS = frozenset({408, 409, 425, 429})


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth another try."""
    return status in RETRY_STATUS or 500 <= status <= 599


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (``"2"``, ``"1.5"`` or an HTTP date), or
    None when absent or unreadable. A date in the past gives 0. ``now``: Unix time (default:
    the clock)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first try; waits as in the module docstring.

    ``max_retry_after_s`` caps a server's ``Retry-After`` (a server asking for an hour would
    otherwise stall the job silently).
    """

    max_retries: int = 5
    base_s: float = 0.5
    max_s: float = 30.0
    max_retry_after_s: float = 300.0

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number ``retry`` (0-based) when the server said nothing."""
        ceiling = min(self.max_s, self.base_s * (2**retry))
        return (rng or random).uniform(0.0, ceiling)

    def wait(
        self, retry: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """Seconds before retry ``retry``: ``retry_after`` (capped, plus up to 10 %) when given,
        else :meth:`backoff`."""
        if retry_after is None:
            return self.backoff(retry, rng)
        spread = 1.0 + (rng or random).uniform(0.0, 0.1)
        return min(retry_after, self.max_retry_after_s) * spread
