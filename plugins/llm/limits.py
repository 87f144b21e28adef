"""Requests and tokens per minute for a whole job: token buckets, in-process or in a Ray actor.

Each limit is a token bucket refilled at ``per_minute / 60`` a second that holds at most
``burst_s`` seconds' worth (at least one request). A request *reserves* its amount at once and
is told how long to wait: the level may go below zero, and the debt is what later callers wait
out, so concurrent callers are served in the order they asked and never all at once. A request
reserves one request and its token estimate (prompt + max_tokens); when the reply's real usage
is known the difference is settled (a refund or more debt).

Under Ray every worker of a job asks one small actor (:class:`SharedLimiter`, ``num_cpus=0``)
for reservations, so the limits hold for the job, not per worker; one round trip per request,
the wait itself happens in the worker. Outside Ray, :class:`LocalLimiter` keeps the same state
in the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

#: Namespace of the shared limiter actors.
NAMESPACE = "bulkinfer"


class TokenBucket:
    """One limit: ``per_minute`` units refilled evenly, at most ``burst_s`` seconds' worth held
    (and never less than ``min_capacity``). Times are ``time.monotonic()`` seconds."""

    def __init__(
        self, per_minute: float, burst_s: float = 1.0, min_capacity: float = 1.0, now: float = 0.0
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * burst_s, min_capacity)
        self.level = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, amount: float, now: float) -> float:
        """Take ``amount`` now; return the seconds the caller must wait before using it."""
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def settle(self, delta: float, now: float) -> None:
        """Correct an earlier reservation by ``delta`` units (negative: give some back)."""
        self._refill(now)
        self.level = min(self.capacity, self.level - delta)


class LimiterState:
    """Both limits of a job (either may be None: unlimited); the body of the Ray actor too."""

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        burst_s: float = 1.0,
    ) -> None:
        now = time.monotonic()
        rpm, tpm = requests_per_minute, tokens_per_minute
        self.requests = TokenBucket(rpm, burst_s, 1.0, now) if rpm else None
        self.tokens = TokenBucket(tpm, burst_s, 1.0, now) if tpm else None
        self.reserved = 0
        self.waited_s = 0.0

    def reserve(self, tokens: float) -> float:
        """Reserve one request and ``tokens``; seconds to wait before sending it."""
        now = time.monotonic()
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.reserve(1.0, now))
        if self.tokens is not None:
            wait = max(wait, self.tokens.reserve(tokens, now))
        self.reserved += 1
        self.waited_s += wait
        return wait

    def settle(self, delta_tokens: float) -> None:
        """The reply used ``delta_tokens`` more (or, negative, fewer) tokens than reserved."""
        if self.tokens is not None and delta_tokens:
            self.tokens.settle(delta_tokens, time.monotonic())

    def stats(self) -> dict[str, float]:
        """Reservations made and seconds of waiting handed out, for tests and reports."""
        return {"reserved": self.reserved, "waited_s": self.waited_s}


class Limiter(Protocol):
    """What the client needs: wait for a permit, and settle the real token usage later."""

    async def acquire(self, tokens: float, notice: Callable[[float], None] | None = None) -> float:
        """Wait until one request with ``tokens`` may go; return the seconds waited.
        ``notice``, when given, is called with the wait (seconds, > 0) before it begins."""
        ...

    def settle(self, delta_tokens: float) -> None:
        """Report that the request used ``delta_tokens`` more tokens than it reserved."""
        ...


class LocalLimiter:
    """The limits for this process only (no Ray, or a single worker)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.state = LimiterState(requests_per_minute, tokens_per_minute)

    async def acquire(self, tokens: float, notice: Callable[[float], None] | None = None) -> float:
        wait = self.state.reserve(tokens)
        if wait > 0:
            if notice is not None:
                notice(wait)
            await asyncio.sleep(wait)
        return wait

    def settle(self, delta_tokens: float) -> None:
        self.state.settle(delta_tokens)


def limiter_name(*parts: Any) -> str:
    """A stable actor name for one job's limits, e.g. ``limiter_name(job_id, base_url, model,
    rpm, tpm)``: the same settings in the same job share one actor."""
    digest = hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]
    return f"bulkinfer-llm-limits-{digest}"


def _actor_class():
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(LimiterState)


class SharedLimiter:
    """The limits shared by every process of a Ray job, through one named actor.

    The first caller of a name creates the actor (``get_if_exists``) and owns it; Ray ends it
    with its owner. Create it on the driver (:meth:`create`) so that it lives as long as the
    job; a worker that finds it gone (its owner died) creates it again.
    """

    def __init__(
        self,
        name: str,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        namespace: str = NAMESPACE,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.limits = (requests_per_minute, tokens_per_minute)
        self._handle: Any = None

    @classmethod
    def create(
        cls, name: str, requests_per_minute: float | None, tokens_per_minute: float | None
    ) -> SharedLimiter:
        """Make sure the actor exists now (call on the driver, after ``ray.init``)."""
        limiter = cls(name, requests_per_minute, tokens_per_minute)
        limiter.handle()
        return limiter

    def handle(self) -> Any:
        """The actor handle, created if no actor has this name yet."""
        if self._handle is None:
            self._handle = (
                _actor_class()
                .options(name=self.name, namespace=self.namespace, get_if_exists=True)
                .remote(*self.limits)
            )
        return self._handle

    def __reduce__(self):  # travels to workers by name; each process finds the actor itself
        return (SharedLimiter, (self.name, *self.limits, self.namespace))

    def __repr__(self) -> str:  # names the actor: unique per job (see limiter_name)
        return f"SharedLimiter({self.name!r})"

    async def acquire(self, tokens: float, notice: Callable[[float], None] | None = None) -> float:
        from ray.exceptions import RayActorError

        try:
            wait = await self.handle().reserve.remote(tokens)
        except RayActorError:  # the owner died and took the actor along: start a new one
            self._handle = None
            wait = await self.handle().reserve.remote(tokens)
        if wait > 0:
            if notice is not None:
                notice(wait)
            await asyncio.sleep(wait)
        return wait

    def settle(self, delta_tokens: float) -> None:
        if delta_tokens:
            self.handle().settle.remote(delta_tokens)

    def stats(self) -> dict[str, float]:
        """The actor's :meth:`LimiterState.stats` (blocking)."""
        import ray

        return ray.get(self.handle().stats.remote())

    def kill(self) -> None:
        """End the actor (the driver, at the end of the job)."""
        import ray

        if self._handle is not None:
            ray.kill(self._handle)
            self._handle = None

    close = kill  # the core closes a job's services when the job ends


def make_limiter(
    requests_per_minute: float | None, tokens_per_minute: float | None
) -> LocalLimiter | None:
    """None without limits, else a :class:`LocalLimiter` (this process only: what a stage uses
    when no job-wide :class:`SharedLimiter` was handed to it)."""
    if not requests_per_minute and not tokens_per_minute:
        return None
    return LocalLimiter(requests_per_minute, tokens_per_minute)
