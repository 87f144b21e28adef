"""Many requests at once from one worker: per-row results in input order, with token counts.

One ``httpx2.AsyncClient`` (the maintained continuation of HTTPX, the transport the ``openai``
package itself uses) keeps a pool of at most ``max_concurrent_requests`` keep-alive connections;
a semaphore holds that many requests in flight. Each row's request is retried as
:mod:`plugins.llm.retry` says, each try first waiting for the job's rate limits
(:mod:`plugins.llm.limits`) and bounded by ``timeout_s`` as a whole (HTTPX's own timeouts are per
socket operation, so a server that drips bytes would outlast them). A backoff wait holds no slot.

A row ends in one of three ways:

- a reply: its text, finish reason and the server's token counts (and, with ``response_format``,
  its columns); a reply cut at ``max_tokens`` (``finish_reason: length``) is counted
  (``rows_truncated``) and kept, unless ``on_truncated: fail``;
- a row error, never retried (:class:`RowFailedError` after the last retry or a 4xx that no retry
  can mend; :class:`NoContentError` for a reply with ``content: null``;
  :class:`TruncatedReplyError` for a reply cut at ``max_tokens`` under ``on_truncated: fail``;
  :class:`~plugins.llm.structured.StructuredOutputError` for a reply that does not match the
  schema): kept in the row's :class:`RowResult`, for the caller to raise so that the stage's
  ``on_error`` decides;
- a job error, raised by :meth:`OpenAIClient.complete` after every row has finished:
  :class:`~pipeline.contract.errors.ConfigError` for 401/403 (the key, ``api_key_env``), for a
  402, or a 403/429 whose body says the account's quota or billing is exhausted (never retried:
  no wait mends it), and for 404 (the address or the model), which every other row would hit too.

A single wait longer than ``long_wait_s`` (10 s: a ``Retry-After`` or backoff before a retry, or
a wait for the job's rate limits) logs one WARNING line on the ``bulkinfer`` logger naming the
row (the start of its prompt), the reason and the seconds.

The API key goes into the ``Authorization`` header only; it is masked in every message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pipeline.contract.errors import ConfigError
from plugins.llm.estimate import approx_tokens
from plugins.llm.journal import Journal, MemoryJournal, request_key
from plugins.llm.limits import Limiter
from plugins.llm.params import OpenAIChatParams
from plugins.llm.preflight import error_detail, scrub
from plugins.llm.protocol import PATHS, MalformedReplyError, Reply, parse_reply
from plugins.llm.retry import RetryPolicy, is_retryable_status, parse_retry_after
from plugins.llm.structured import StructuredOutput, StructuredOutputError

T = TypeVar("T")
log = logging.getLogger("bulkinfer")
#: Completion tokens a token-per-minute reservation assumes when ``max_tokens`` is unset.
ASSUMED_COMPLETION_TOKENS = 256


#: Error codes and phrases in a 403/429 body that mean the account cannot pay (OpenAI's codes
#: and message; lower case). A plain "quota" is not among them: Gemini's per-minute limits say
#: "Quota exceeded ... retry in 20s", which a wait does mend.
QUOTA_MARKERS = (
    "insufficient_quota",
    "billing_hard_limit_reached",
    "billing_not_active",
    "exceeded your current quota",
    "check your plan and billing",
)


class RowFailedError(RuntimeError):
    """One row's request failed for good: retries used up, or a 4xx no retry can mend."""


class NoContentError(RowFailedError):
    """The server answered the row with ``content: null`` (its parser failed, a reasoning model
    was cut before the answer, or it refused): the row fails, not retried."""


class TruncatedReplyError(RowFailedError):
    """The reply was cut at ``max_tokens`` (``finish_reason: length``) under
    ``on_truncated: fail``: the row fails, not retried."""


@dataclass
class RowResult:
    """The outcome of one row's request. Exactly one of ``text`` and ``error`` is set, except
    that a reply failing ``response_format`` or cut at ``max_tokens`` under
    ``on_truncated: fail`` keeps its ``text`` beside the error (``text`` is None with a
    :class:`NoContentError`). ``finish_reason`` is the server's, whenever a reply came."""

    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: Structured output: column -> value (``response_format`` only).
    columns: dict[str, Any] | None = None
    error: Exception | None = None
    #: Requests sent for this row (1 + retries); 0 for an answer from the journal.
    attempts: int = 0
    #: The server's reply, as kept in the journal (None when none came).
    reply: Reply | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


#: Counter names, all amounts since the last :meth:`Counters.take`.
COUNTERS = (
    "requests",  # HTTP requests sent (tries, retries included)
    "retries",  # of which retries
    "retries_rate_limited",  # after a 429
    "retries_server",  # after a 5xx, 408, 409 or 425
    "retries_timeout",  # after no complete answer within timeout_s
    "retries_connection",  # after a refused, reset or dropped connection
    "retries_malformed",  # after a 2xx whose body was not the endpoint's JSON
    "rows_ok",
    "rows_failed",  # row errors of every kind, rows_no_content among them
    "rows_no_content",  # of which replies with content: null
    "rows_truncated",  # replies cut at max_tokens (finish_reason: length), kept or failed
    "prompt_tokens",  # as the server counted them (usage)
    "completion_tokens",
    "throttled_s",  # seconds requests waited for the rate limits (summed over requests)
    "rows_from_journal",  # answered from the journal: an earlier run's, or this job's answer
    # to an identical request (dedupe)
    "requests_deduplicated",  # answered by an identical request in flight: not sent
    "tokens_saved",  # prompt + completion tokens of the answers not paid again (both above)
)


class Counters:
    """Amounts a worker accumulates; :meth:`take` hands them over and starts from zero."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0.0)

    def add(self, name: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[name] += amount

    def peek(self) -> dict[str, float]:
        """The amounts so far, unchanged."""
        with self._lock:
            return dict(self._values)

    def take(self) -> dict[str, float]:
        """The amounts since the last call (every name, zeros included), then reset."""
        with self._lock:
            values, self._values = self._values, dict.fromkeys(COUNTERS, 0.0)
        return values


@dataclass
class _Failure:
    kind: str  # a retries_* counter, or "final"
    message: str
    retry_after: float | None = None


@dataclass
class ClientSettings:
    """Everything :class:`OpenAIClient` needs (build it with :meth:`from_params`)."""

    base_url: str
    endpoint: str = "chat"
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_concurrent_requests: int = 16
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_tokens: int | None = None
    stop: list[str] | None = None
    response_format: dict[str, Any] | None = None
    #: Send identical requests once (``dedupe``).
    dedupe: bool = True
    #: ``keep`` or ``fail`` a reply cut at ``max_tokens`` (finish_reason: length).
    on_truncated: str = "keep"
    #: A single wait longer than this many seconds is logged (a retry's or the rate limits').
    long_wait_s: float = 10.0
    #: Config key of the params block, for messages.
    key: str = "predictor.params"

    @classmethod
    def from_params(cls, params: OpenAIChatParams, key: str = "predictor.params") -> ClientSettings:
        """Settings from the predictor's params; the key is read from ``api_key_env`` now."""
        return cls(
            base_url=params.base_url,
            endpoint=params.endpoint,
            api_key=params.api_key(),
            api_key_env=params.api_key_env,
            timeout_s=params.timeout_s,
            max_concurrent_requests=params.max_concurrent_requests,
            retry=RetryPolicy(max_retries=params.max_retries),
            max_tokens=params.max_tokens,
            stop=params.stop,
            response_format=params.response_format,
            dedupe=params.dedupe,
            on_truncated=params.on_truncated,
            key=key,
        )


class OpenAIClient:
    """Sends request bodies to one endpoint, ``max_concurrent_requests`` at a time.

    Use from one event loop (the HTTP connection pool belongs to it); :class:`BlockingClient`
    runs one on a thread of its own for synchronous callers.
    """

    def __init__(
        self,
        settings: ClientSettings,
        limiter: Limiter | None = None,
        rng: random.Random | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        #: Where answers are kept by request (:mod:`plugins.llm.journal`); in memory by default.
        self.journal: Journal = journal if journal is not None else MemoryJournal()
        #: Requests of this worker in flight, by key: an identical request waits for the same
        #: answer (``dedupe``).
        self._pending: dict[str, asyncio.Future[RowResult]] = {}
        self.counters = Counters()
        self.structured = (
            StructuredOutput(settings.response_format) if settings.response_format else None
        )
        self._rng = rng or random.Random()
        self._http: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._url = settings.base_url.rstrip("/") + PATHS[settings.endpoint]

    def __repr__(self) -> str:
        return f"OpenAIClient({self._url!r})"

    def _open(self) -> None:
        import httpx2

        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        self._http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(s.timeout_s, connect=min(s.timeout_s, 10.0)),
            limits=httpx2.Limits(
                max_connections=s.max_concurrent_requests,
                max_keepalive_connections=s.max_concurrent_requests,
            ),
            trust_env=False,
        )
        self._slots = asyncio.Semaphore(s.max_concurrent_requests)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def complete(self, bodies: Sequence[dict[str, Any]]) -> list[RowResult]:
        """One :class:`RowResult` per body, in the same order.

        Raises :class:`ConfigError` (after every row has finished) when the server refused the
        key, says the account's quota or billing is exhausted, or does not know the address or
        model.
        """
        if self._http is None:
            self._open()
        outcomes = await asyncio.gather(*(self._answer(b) for b in bodies), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # a ConfigError (the others are kept per row)
        return list(outcomes)

    def _reservation(self, body: dict[str, Any]) -> float:
        texts = (
            [m.get("content") or "" for m in body["messages"]]
            if "messages" in body
            else [body.get("prompt", "")]
        )
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        completion = self.settings.max_tokens or ASSUMED_COMPLETION_TOKENS
        return approx_tokens(texts, "messages" in body) + completion

    async def _answer(self, body: dict[str, Any]) -> RowResult:
        """One row's result: from the journal when an answer to the same request is there
        (with ``dedupe``, any earlier answer; without, one an earlier run got, each used once),
        from an identical request in flight (``dedupe``), else from the server; a new answer
        goes into the journal before it is handed back."""
        key = request_key(body)
        stored = self.journal.get(key) if self.settings.dedupe else self.journal.take(key)
        if stored is not None:
            self.counters.add("rows_from_journal")
            return self._replayed(stored)
        if not self.settings.dedupe:
            return await self._asked(key, body)
        pending = self._pending.get(key)
        if pending is not None:
            self.counters.add("requests_deduplicated")
            result = await asyncio.shield(pending)
            self.counters.add("rows_ok" if result.ok else "rows_failed")
            if result.ok:
                self.counters.add("tokens_saved", _tokens(result))
            return replace(result)
        future: asyncio.Future[RowResult] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await self._asked(key, body)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when none waits
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(result)
        return result

    async def _asked(self, key: str, body: dict[str, Any]) -> RowResult:
        result = await self._row(body)
        if result.reply is not None and result.reply.text is not None:  # paid for: kept
            await asyncio.to_thread(self.journal.put, key, result.reply.to_json())
        return result

    def _replayed(self, stored: dict[str, Any]) -> RowResult:
        """A journal's answer as the row's result; its tokens are counted as saved, not spent."""
        result = self._finish(Reply.from_json(stored), attempts=0, spent=False)
        if result.ok:
            self.counters.add("tokens_saved", _tokens(result))
        return result

    async def _row(self, body: dict[str, Any]) -> RowResult:
        retry = self.settings.retry
        reserved = self._reservation(body) if self.limiter is not None else 0.0
        failure: _Failure | None = None
        attempts = 0
        for attempt in range(retry.max_retries + 1):
            if failure is not None:
                self.counters.add("retries")
                self.counters.add(failure.kind)
                wait = retry.wait(attempt - 1, failure.retry_after, self._rng)
                if wait > self.settings.long_wait_s:
                    why = (
                        "the server's Retry-After" if failure.retry_after is not None else "backoff"
                    )
                    log.warning(
                        "openai_chat: the row %s waits %.0f s before retry %d of %d (%s after %s)",
                        _row_name(body),
                        wait,
                        attempt,
                        retry.max_retries,
                        why,
                        failure.message,
                    )
                await asyncio.sleep(wait)
            attempts += 1
            outcome = await self._attempt(body, reserved)
            if isinstance(outcome, Reply):
                return self._finish(outcome, attempts)
            failure = outcome
            if failure.kind == "final":
                break
        self.counters.add("rows_failed")
        assert failure is not None
        if failure.kind != "final":
            message = f"gave up after {attempts} requests; the last: {failure.message}"
        else:
            message = failure.message
        return RowResult(error=RowFailedError(message), attempts=attempts)

    async def _attempt(self, body: dict[str, Any], reserved: float) -> Reply | _Failure:
        import httpx2

        s = self.settings
        assert self._slots is not None
        async with self._slots:
            if self.limiter is not None:
                waited = await self.limiter.acquire(reserved, notice=self._throttle_notice(body))
                self.counters.add("throttled_s", waited)
            self.counters.add("requests")
            try:
                response = await asyncio.wait_for(
                    self._http.post(self._url, json=body), s.timeout_s
                )
            except (asyncio.TimeoutError, httpx2.TimeoutException):
                return _Failure("retries_timeout", f"no answer within timeout_s={s.timeout_s:g}")
            except httpx2.TransportError as exc:
                reason = str(exc).splitlines()[0] if str(exc) else "no detail"
                reason = scrub(reason, s.api_key)
                return _Failure("retries_connection", f"{type(exc).__name__}: {reason}")
        return self._judge(response, reserved)

    def _throttle_notice(self, body: dict[str, Any]):
        """What the limiter calls with its wait before sleeping: logs a long one."""

        def notice(wait: float) -> None:
            if wait > self.settings.long_wait_s:
                log.warning(
                    "openai_chat: the row %s waits %.0f s for the job's rate limits "
                    "(requests_per_minute / tokens_per_minute)",
                    _row_name(body),
                    wait,
                )

        return notice

    def _judge(self, response: Any, reserved: float) -> Reply | _Failure:
        s = self.settings
        status = response.status_code
        if 200 <= status < 300:
            try:
                payload = response.json()
            except ValueError:
                return _Failure("retries_malformed", f"HTTP {status} with a body that is not JSON")
            try:
                reply = parse_reply(s.endpoint, payload, s.stop)
            except MalformedReplyError as exc:
                return _Failure("retries_malformed", f"HTTP {status}: {exc}")
            if self.limiter is not None and reply.prompt_tokens is not None:
                used = reply.prompt_tokens + (reply.completion_tokens or 0)
                self.limiter.settle(used - reserved)
            return reply
        detail = error_detail(response, s.api_key)
        if status == 402 or (status in (403, 429) and _out_of_quota(response)):
            raise ConfigError(
                f"{s.base_url} says the account has no quota or credit left: HTTP {status} "
                f"{detail.rstrip('. ')}. Retrying does not help: check the account's plan and "
                f"billing, and that {s.key}.api_key_env (${s.api_key_env}) and {s.key}.base_url "
                "name the account meant",
                key=f"{s.key}.api_key_env",
            )
        if status in (401, 403):
            env = s.api_key_env
            given = f"the key in ${env}" if s.api_key else f"no key (${env} is unset)"
            raise ConfigError(
                f"{s.base_url} refused {given}: HTTP {status} {detail}", key=f"{s.key}.api_key_env"
            )
        if status == 404:
            raise ConfigError(
                f"POST {self._url} answered 404 ({detail}): the address or the model is wrong",
                key=f"{s.key}.model" if "model" in detail.lower() else f"{s.key}.base_url",
            )
        if is_retryable_status(status):
            kind = "retries_rate_limited" if status == 429 else "retries_server"
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return _Failure(kind, f"HTTP {status}: {detail}", retry_after)
        return _Failure("final", f"the server refused the request: HTTP {status}: {detail}")

    def _finish(self, reply: Reply, attempts: int, spent: bool = True) -> RowResult:
        """The row's result from a reply; ``spent``: its tokens were paid for by this run
        (False for an answer from the journal)."""
        s = self.settings
        if spent:
            self.counters.add("prompt_tokens", reply.prompt_tokens or 0)
            self.counters.add("completion_tokens", reply.completion_tokens or 0)
        result = RowResult(
            reply=reply,
            text=reply.text,
            finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            attempts=attempts,
        )
        cut = reply.finish_reason == "length"
        if cut:
            self.counters.add("rows_truncated")
        if reply.text is None:
            message = f"the server returned no content (finish_reason={reply.finish_reason})"
            if reply.refusal:
                message += f"; it refused: {reply.refusal[:200]!r}"
            elif cut:
                message += f": cut at max_tokens before any answer; {self._raise_max_tokens()}"
            self.counters.add("rows_no_content")
            return self._failed(result, NoContentError(message))
        if cut and s.on_truncated == "fail":
            return self._failed(
                result,
                TruncatedReplyError(
                    f"the reply was cut at max_tokens (finish_reason=length); "
                    f"{self._raise_max_tokens()}, or set {s.key}.on_truncated=keep to keep cut "
                    f"replies; reply: {_clip(reply.text)}"
                ),
            )
        if self.structured is not None:
            try:
                result.columns = self.structured.parse(reply.text)
            except StructuredOutputError as exc:
                if cut:
                    exc = StructuredOutputError(
                        f"the reply was cut at max_tokens (finish_reason=length) before its JSON "
                        f"ended; {self._raise_max_tokens()}. {exc}"
                    )
                return self._failed(result, exc)
        self.counters.add("rows_ok")
        return result

    def _failed(self, result: RowResult, error: Exception) -> RowResult:
        result.error = error
        self.counters.add("rows_failed")
        return result

    def _raise_max_tokens(self) -> str:
        now = self.settings.max_tokens
        return f"raise {self.settings.key}.max_tokens (now {now or 'unset: the server default'})"


def _out_of_quota(response: Any) -> bool:
    """Whether an error body's code, type or message says the account cannot pay
    (:data:`QUOTA_MARKERS`)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text
    else:
        error = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(error, dict):
            text = " ".join(str(error.get(k) or "") for k in ("code", "type", "message"))
        else:
            text = str(error)
    text = text[:2000].lower()
    return any(marker in text for marker in QUOTA_MARKERS)


def _row_name(body: dict[str, Any], chars: int = 40) -> str:
    """A row as a log line names it: the start of its prompt (the last message's content)."""
    if "messages" in body:
        prompt = body["messages"][-1].get("content") if body["messages"] else ""
    else:
        prompt = body.get("prompt", "")
    prompt = " ".join(str(prompt or "").split())
    return repr(prompt if len(prompt) <= chars else prompt[: chars - 3] + "...")


def _clip(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _tokens(result: RowResult) -> float:
    return float((result.prompt_tokens or 0) + (result.completion_tokens or 0))


class BlockingClient:
    """An :class:`OpenAIClient` on an event loop of its own thread, for synchronous callers
    (a map stage's ``__call__``). The loop and the connection pool live until :meth:`close`."""

    def __init__(
        self,
        settings: ClientSettings,
        limiter: Limiter | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="openai-client", daemon=True
        )
        self._thread.start()
        self.client = OpenAIClient(settings, limiter, journal=journal)

    @property
    def counters(self) -> Counters:
        return self.client.counters

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def complete(self, bodies: Sequence[dict[str, Any]]) -> list[RowResult]:
        """As :meth:`OpenAIClient.complete`, blocking until every row has finished."""
        return self._run(self.client.complete(bodies))

    def close(self) -> None:
        """Close the pool and stop the loop's thread (idempotent)."""
        if self.loop.is_closed():
            return
        self._run(self.client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
