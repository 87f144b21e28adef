"""The end-of-job line of an LLM stage, from the counters its workers reported."""

from __future__ import annotations

from collections.abc import Mapping

from plugins.llm.estimate import cost


def job_summary(
    counters: Mapping[str, float],
    seconds: float | None = None,
    price=None,
    max_tokens: int | None = None,
    key: str = "predictor.params",
) -> str:
    """E.g. ``1,000 requests (12 retries: 10 rate-limited, 2 server errors), 998 rows answered,
    2 failed (1 with no content); 45,000 prompt + 9,000 completion tokens, 310 completion
    tokens/s; cost 0.0123; 40 rows cut at max_tokens=16 (finish_reason=length): raise
    predictor.params.max_tokens``.

    ``counters``: the job's totals of :data:`plugins.llm.client.COUNTERS` (missing ones are 0);
    ``seconds``: the stage's wall time, for the rate (left out when None); ``price``: with
    ``input``/``output`` per million tokens, for the cost (left out when None); ``max_tokens``
    and ``key`` (the params' config key): for the advice on rows cut at ``max_tokens``, which
    is left out when none was.
    """
    c = {name: int(round(value)) for name, value in counters.items() if name != "throttled_s"}
    retries = c.get("retries", 0)
    text = f"{c.get('requests', 0):,} requests"
    if retries:
        kinds = [
            (c.get("retries_rate_limited", 0), "rate-limited"),
            (c.get("retries_server", 0), "server errors"),
            (c.get("retries_timeout", 0), "timeouts"),
            (c.get("retries_connection", 0), "connection errors"),
            (c.get("retries_malformed", 0), "malformed replies"),
        ]
        text += f" ({retries:,} retries: " + ", ".join(f"{n:,} {k}" for n, k in kinds if n) + ")"
    text += f", {c.get('rows_ok', 0):,} rows answered"
    if c.get("rows_failed", 0):
        text += f", {c['rows_failed']:,} failed"
        if c.get("rows_no_content", 0):
            text += f" ({c['rows_no_content']:,} with no content)"
    prompt, completion = c.get("prompt_tokens", 0), c.get("completion_tokens", 0)
    text += f"; {prompt:,} prompt + {completion:,} completion tokens"
    if seconds:
        text += f", {completion / seconds:,.0f} completion tokens/s"
    reused = c.get("rows_from_journal", 0) + c.get("requests_deduplicated", 0)
    if reused:
        text += (
            f"; {reused:,} rows answered without a request of their own (identical requests "
            f"sent once, answers kept from earlier runs), {c.get('tokens_saved', 0):,} tokens "
            "not paid again"
        )
    if counters.get("throttled_s", 0) >= 1:
        text += f"; waited {counters['throttled_s']:,.0f} s for the rate limits (all requests)"
    spent = cost(prompt, completion, price)
    if spent is not None:
        text += f"; cost {spent:.4g}"
    cut = c.get("rows_truncated", 0)
    if cut:
        limit = f"max_tokens={max_tokens}" if max_tokens else "max_tokens"
        text += f"; {cut:,} rows cut at {limit} (finish_reason=length): raise {key}.max_tokens"
    return text
