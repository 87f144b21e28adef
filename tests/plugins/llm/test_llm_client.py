"""The OpenAI-compatible client against a real server (transformers serve on a tiny chat model),
through a proxy that injects faults and counts what each row got.

The tiny model answers every chat prompt with ``{"label": "positive"}`` (CHAT_REPLY), so the
texts are known. Every test checks the client's own results and, where it matters, what the
proxy saw: each row answered exactly once, each fault retried as many times as it was injected.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from fault_proxy import Fault

from pipeline.contract.errors import ColumnNotFoundError, ConfigError, DataError
from plugins.llm.client import (
    BlockingClient,
    ClientSettings,
    NoContentError,
    RowFailedError,
    TruncatedReplyError,
)
from plugins.llm.limits import Limiter, make_limiter
from plugins.llm.params import OpenAIChatParams
from plugins.llm.protocol import RequestBuilder
from plugins.llm.replay import Replay
from plugins.llm.retry import RetryPolicy, parse_retry_after
from plugins.llm.structured import StructuredOutputError
from plugins.samples.models import CHAT_REPLY

FAST_RETRY = RetryPolicy(max_retries=3, base_s=0.01, max_s=0.05)
LABEL_SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative"]}},
    "required": ["label"],
}


def params(llm_proxy, llm_server, **changes) -> OpenAIChatParams:
    settings = {"max_tokens": 16, "temperature": 0, **changes}
    return OpenAIChatParams(base_url=llm_proxy.base_url, model=llm_server.model, **settings)


def run(
    p: OpenAIChatParams,
    rows: list[dict],
    retry: RetryPolicy = FAST_RETRY,
    limiter: Limiter | None = None,
    **settings,
):
    """Rows -> (results, counters) through a fresh client."""
    builder = RequestBuilder(p)
    settings = {"retry": retry, **settings}
    client = BlockingClient(replace(ClientSettings.from_params(p), **settings), limiter)
    try:
        return client.complete([builder.body(r) for r in rows]), client.counters.take()
    finally:
        client.close()


def rows(n: int) -> list[dict]:
    return [{"text": f"row-{i} tell me something"} for i in range(n)]


def test_rows_are_answered_concurrently_in_input_order_with_token_counts(llm_server, llm_proxy):
    p = params(llm_proxy, llm_server, max_concurrent_requests=4)
    results, counters = run(p, rows(12))
    assert [r.text for r in results] == [CHAT_REPLY] * 12
    assert all(r.finish_reason == "stop" and r.attempts == 1 for r in results)
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)
    assert counters["requests"] == 12 and counters["retries"] == 0
    assert counters["rows_ok"] == 12 and counters["rows_failed"] == 0
    assert counters["prompt_tokens"] == sum(r.prompt_tokens for r in results)
    assert counters["completion_tokens"] == sum(r.completion_tokens for r in results)
    assert 1 < llm_proxy.max_in_flight <= 4  # several at once, never more than allowed
    assert llm_proxy.clean_answers() == {f"row-{i}": 1 for i in range(12)}


def test_each_row_is_put_in_its_own_request(llm_server, llm_proxy):
    p = params(llm_proxy, llm_server, system_prompt="Answer about {topic}.", prompt="{text}")
    results, _ = run(p, [{"text": "row-0 a", "topic": "cats"}, {"text": "row-1 b", "topic": "x"}])
    # The server's prompt counts differ with the system prompt's words: one request per row.
    assert results[0].prompt_tokens != results[1].prompt_tokens


def test_completions_endpoint_and_max_tokens(llm_server, llm_proxy):
    p = params(llm_proxy, llm_server, endpoint="completions", max_tokens=2)
    results, counters = run(p, rows(3))
    assert all(r.finish_reason == "length" and r.completion_tokens == 2 for r in results)
    assert counters["completion_tokens"] == 6


def test_a_stop_string_ends_the_text_and_is_not_part_of_it(llm_server, llm_proxy):
    results, _ = run(params(llm_proxy, llm_server, stop="positive"), rows(2))
    assert [r.text for r in results] == ['{"label": "'] * 2


def test_every_fault_kind_is_retried_and_every_row_answered_exactly_once(llm_server, llm_proxy):
    llm_proxy.script(
        {
            2: Fault.http(429, retry_after="0"),
            4: Fault.http(500),
            5: Fault.http(503),
            6: Fault.malformed(),
            8: Fault.drop(),
            9: Fault.slow(3.0),  # past timeout_s: the client gives up and retries
        }
    )
    results, counters = run(params(llm_proxy, llm_server, timeout_s=1.5), rows(10))
    assert [r.text for r in results] == [CHAT_REPLY] * 10
    assert counters["retries"] == 6
    assert counters["requests"] == 16
    assert counters["retries_rate_limited"] == 1
    assert counters["retries_server"] == 2
    assert counters["retries_malformed"] == 1
    assert counters["retries_connection"] == 1
    assert counters["retries_timeout"] == 1
    assert sum(r.attempts for r in results) == 16
    assert llm_proxy.clean_answers() == {f"row-{i}": 1 for i in range(10)}
    assert llm_proxy.outcomes()["status"] == 3


def test_retry_after_is_honoured(llm_server, llm_proxy):
    llm_proxy.add_rule(lambda body: b"row-1 " in body, Fault.http(429, retry_after="1"))
    results, counters = run(params(llm_proxy, llm_server), rows(2))
    assert all(r.ok for r in results) and counters["retries_rate_limited"] == 1
    row1 = [r.arrived for r in llm_proxy.records if r.key == "row-1"]
    assert len(row1) == 2 and row1[1] - row1[0] >= 1.0


def test_retry_after_may_be_an_http_date():
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(7.0)
    assert parse_retry_after(format_datetime(now, usegmt=True), now=now.timestamp() + 5) == 0.0
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_grows_exponentially_within_jitter_bounds():
    import random

    policy = RetryPolicy(base_s=0.5, max_s=4.0)
    rng = random.Random(0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        waits = [policy.wait(retry, None, rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) > ceiling / 2  # spread over the range, not a constant
    assert 3.0 <= policy.wait(0, 3.0, rng) <= 3.3  # Retry-After, never less
    assert policy.wait(0, 10_000.0, rng) <= policy.max_retry_after_s * 1.1


def test_a_row_that_fails_every_retry_fails_alone(llm_server, llm_proxy):
    llm_proxy.add_rule(lambda body: b"row-3 " in body, Fault.http(503), times=None)
    results, counters = run(params(llm_proxy, llm_server), rows(6), RetryPolicy(2, base_s=0.01))
    failed = [i for i, r in enumerate(results) if not r.ok]
    assert failed == [3]
    error = results[3].error
    assert isinstance(error, RowFailedError)
    assert "gave up after 3 requests" in str(error) and "HTTP 503" in str(error)
    assert results[3].attempts == 3
    assert counters["rows_failed"] == 1 and counters["rows_ok"] == 5
    assert len([r for r in llm_proxy.records if r.key == "row-3"]) == 3
    assert llm_proxy.clean_answers() == {f"row-{i}": 1 for i in range(6) if i != 3}


def test_a_request_the_server_refuses_is_not_retried(llm_server, llm_proxy):
    # transformers serve answers 422 to a field it does not know.
    results, counters = run(params(llm_proxy, llm_server, extra_body={"no_such_field": 1}), rows(2))
    assert all(isinstance(r.error, RowFailedError) and r.attempts == 1 for r in results)
    assert "HTTP 422" in str(results[0].error) and "no_such_field" in str(results[0].error)
    assert counters["retries"] == 0


def test_a_refused_key_stops_the_job_naming_the_variable_never_the_key(
    llm_server, llm_proxy, monkeypatch
):
    monkeypatch.setenv("BULKINFER_TEST_KEY", "sk-test-SECRET-123")
    llm_proxy.add_rule(lambda body: True, Fault.http(401), times=None)
    p = params(llm_proxy, llm_server, api_key_env="BULKINFER_TEST_KEY")
    with pytest.raises(ConfigError) as caught:
        run(p, rows(3))
    assert caught.value.key == "predictor.params.api_key_env"
    assert "BULKINFER_TEST_KEY" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    assert {r.authorization for r in llm_proxy.records} == {"Bearer sk-test-SECRET-123"}
    assert "SECRET" not in repr(ClientSettings.from_params(p))


def test_structured_output_becomes_columns(llm_server, llm_proxy):
    results, counters = run(params(llm_proxy, llm_server, response_format=LABEL_SCHEMA), rows(3))
    assert [r.columns for r in results] == [{"label": "positive"}] * 3
    assert counters["rows_ok"] == 3


def test_a_reply_that_breaks_the_schema_fails_its_row_without_a_retry(llm_server, llm_proxy):
    schema = {**LABEL_SCHEMA, "properties": {"label": {"enum": ["negative"]}}}
    results, counters = run(params(llm_proxy, llm_server, response_format=schema), rows(2))
    assert all(isinstance(r.error, StructuredOutputError) for r in results)
    assert "does not match response_format at label" in str(results[0].error)
    assert results[0].text == CHAT_REPLY  # kept, for the dead-letter record
    assert counters["retries"] == 0 and counters["rows_failed"] == 2


def test_a_reply_that_is_not_json_fails_its_row(llm_server, llm_proxy):
    p = params(llm_proxy, llm_server, response_format=LABEL_SCHEMA, stop=["positive"])
    results, _ = run(p, rows(1))
    assert isinstance(results[0].error, StructuredOutputError)
    assert "not JSON" in str(results[0].error)


# -- what the replies say: finish_reason, content: null --------------------------------------


def test_a_reply_cut_at_max_tokens_is_kept_and_counted_by_default(llm_server, llm_proxy):
    results, counters = run(params(llm_proxy, llm_server, max_tokens=2), rows(3))
    assert all(r.ok and r.text for r in results)
    assert [(r.finish_reason, r.completion_tokens) for r in results] == [("length", 2)] * 3
    assert counters["rows_truncated"] == 3
    assert counters["rows_ok"] == 3 and counters["rows_failed"] == 0


def test_on_truncated_fail_makes_a_cut_reply_a_row_error_naming_max_tokens(llm_server, llm_proxy):
    p = params(llm_proxy, llm_server, max_tokens=2, on_truncated="fail")
    results, counters = run(p, rows(2))
    assert all(isinstance(r.error, TruncatedReplyError) for r in results)
    assert all(r.text and r.finish_reason == "length" for r in results)  # kept beside the error
    assert str(results[0].error).startswith(
        "the reply was cut at max_tokens (finish_reason=length); raise "
        "predictor.params.max_tokens (now 2), or set predictor.params.on_truncated=keep to keep "
        "cut replies; reply: "
    )
    assert counters["rows_truncated"] == 2 and counters["rows_failed"] == 2
    assert counters["rows_ok"] == 0 and counters["requests"] == 2  # not retried


def test_a_reply_that_ends_normally_is_not_truncated_under_on_truncated_fail(llm_server, llm_proxy):
    results, counters = run(params(llm_proxy, llm_server, on_truncated="fail"), rows(2))
    assert [(r.ok, r.finish_reason) for r in results] == [(True, "stop")] * 2
    assert counters["rows_truncated"] == 0


def test_a_structured_reply_cut_at_max_tokens_says_so_and_names_the_key(llm_server, llm_proxy):
    p = params(llm_proxy, llm_server, response_format=LABEL_SCHEMA, max_tokens=3)
    results, counters = run(p, rows(1))
    error = results[0].error
    assert isinstance(error, StructuredOutputError)
    assert str(error).startswith(
        "the reply was cut at max_tokens (finish_reason=length) before its JSON ended; raise "
        "predictor.params.max_tokens (now 3). the reply is not JSON ("
    )
    assert counters["rows_truncated"] == 1 and counters["rows_failed"] == 1


def test_content_null_is_a_row_error_not_an_empty_answer(llm_server, llm_proxy):
    llm_proxy.add_rule(lambda body: b"row-1 " in body, Fault.answer(None))
    llm_proxy.add_rule(lambda body: b"row-2 " in body, Fault.answer(None, finish_reason="length"))
    results, counters = run(params(llm_proxy, llm_server), rows(4))
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, NoContentError) and results[1].text is None
    assert str(results[1].error) == "the server returned no content (finish_reason=stop)"
    assert str(results[2].error) == (
        "the server returned no content (finish_reason=length): cut at max_tokens before any "
        "answer; raise predictor.params.max_tokens (now 16)"
    )
    assert counters["rows_no_content"] == 2 and counters["rows_failed"] == 2
    assert counters["rows_ok"] == 2 and counters["rows_truncated"] == 1
    assert counters["retries"] == 0  # the server's answer: not asked again


# -- quota and billing ------------------------------------------------------------------------

OPENAI_QUOTA = {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota",
    "param": None,
    "code": "insufficient_quota",
}
OPENAI_BILLING = {
    "message": "Billing hard limit has been reached",
    "type": "invalid_request_error",
    "code": "billing_hard_limit_reached",
}


@pytest.mark.parametrize(
    "status, error",
    [
        (429, OPENAI_QUOTA),
        (403, OPENAI_BILLING),
        (429, {"message": "You exceeded your current quota, please check your plan."}),
    ],
)
def test_an_exhausted_quota_fails_the_job_at_once_without_retries(
    llm_server, llm_proxy, status, error
):
    llm_proxy.add_rule(
        lambda body: True, Fault.http(status, retry_after="0", error=error), times=None
    )
    with pytest.raises(ConfigError) as caught:
        run(params(llm_proxy, llm_server), rows(3))
    assert caught.value.key == "predictor.params.api_key_env"
    assert caught.value.message.startswith(
        f"{llm_proxy.base_url} says the account has no quota or credit left: HTTP {status} "
        f"{error['message'].rstrip('.')}. Retrying does not help"
    )
    assert "predictor.params.base_url" in caught.value.message
    assert len(llm_proxy.records) == 3  # one request per row, none retried


@pytest.mark.parametrize(
    "error",
    [
        {"message": "Rate limit reached for m on requests per min (RPM): Limit 3, Used 3.",
         "type": "requests", "code": "rate_limit_exceeded"},
        # Gemini's per-minute limits say "quota", and a wait does mend them.
        {"message": "Quota exceeded for metric: generate_content_requests, limit: 15. "
         "Please retry in 1s.", "status": "RESOURCE_EXHAUSTED", "code": 429},
    ],
)  # fmt: skip
def test_a_rate_limit_429_is_still_retried(llm_server, llm_proxy, error):
    llm_proxy.add_rule(
        lambda body: b"row-1 " in body, Fault.http(429, retry_after="0", error=error)
    )
    results, counters = run(params(llm_proxy, llm_server), rows(2))
    assert [r.text for r in results] == [CHAT_REPLY] * 2
    assert counters["retries_rate_limited"] == 1


# -- long waits are logged --------------------------------------------------------------------


def bulkinfer_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "bulkinfer" and r.levelno == logging.WARNING
    ]


def test_a_retry_wait_longer_than_long_wait_s_logs_one_line_naming_the_row(
    llm_server, llm_proxy, caplog
):
    assert ClientSettings(base_url="http://127.0.0.1:1/v1").long_wait_s == 10.0  # the default
    llm_proxy.add_rule(lambda body: b"row-1 " in body, Fault.http(429, retry_after="1"))
    with caplog.at_level(logging.WARNING, logger="bulkinfer"):
        results, _ = run(params(llm_proxy, llm_server), rows(3), long_wait_s=0.5)
    assert all(r.ok for r in results)
    assert bulkinfer_warnings(caplog) == [
        "openai_chat: the row 'row-1 tell me something' waits 1 s before retry 1 of 3 (the "
        "server's Retry-After after HTTP 429: injected by the fault proxy)"
    ]


def test_a_long_wait_for_the_rate_limits_logs_one_line_naming_the_row(
    llm_server, llm_proxy, caplog
):
    # 60 requests a minute, a burst of one: the rows wait about 0, 1 and 2 s.
    with caplog.at_level(logging.WARNING, logger="bulkinfer"):
        results, counters = run(
            params(llm_proxy, llm_server), rows(3), limiter=make_limiter(60, None), long_wait_s=1.5
        )
    assert all(r.ok for r in results) and counters["throttled_s"] >= 2.5
    assert bulkinfer_warnings(caplog) == [
        "openai_chat: the row 'row-2 tell me something' waits 2 s for the job's rate limits "
        "(requests_per_minute / tokens_per_minute)"
    ]


def test_a_failed_batch_asked_again_row_by_row_sends_nothing_twice(llm_server, llm_proxy):
    """What the guard does after a batch raised (on_error: skip / dead_letter)."""
    llm_proxy.add_rule(lambda body: b"row-2 " in body, Fault.http(500), times=None)
    p = params(llm_proxy, llm_server)
    builder = RequestBuilder(p)
    bodies = [builder.body(r) for r in rows(4)]
    client = BlockingClient(replace(ClientSettings.from_params(p), retry=RetryPolicy(1, 0.01)))
    replay: Replay = Replay()
    try:
        results = client.complete(bodies)
        replay.keep(bodies, results)
        sent = len(llm_proxy.records)
        again = [replay.take(b) for b in bodies]
    finally:
        client.close()
    assert again == results and len(replay) == 0
    assert len(llm_proxy.records) == sent  # no new request
    assert [r.ok for r in again] == [True, True, False, True]


def test_identical_rows_each_get_their_own_result_back():
    replay: Replay = Replay()
    body = {"model": "m", "prompt": "same"}
    replay.keep([body, dict(body)], ["first", "second"])
    assert [replay.take(body), replay.take(body), replay.take(body)] == ["first", "second", None]


def test_a_template_column_the_data_lacks_names_the_key_and_the_column():
    p = OpenAIChatParams(base_url="http://127.0.0.1:1/v1", model="m", prompt="Sum: {body}")
    builder = RequestBuilder(p, key="predictor.params")
    with pytest.raises(ColumnNotFoundError) as caught:
        builder.require(["text", "id"])
    assert caught.value.key == "predictor.params.prompt"
    assert "'body'" in str(caught.value) and "text, id" in str(caught.value)
    with pytest.raises(ColumnNotFoundError):
        builder.body({"text": "x"})
    with pytest.raises(DataError, match="null"):
        builder.body({"body": None})


def test_request_bodies_carry_only_the_settings_that_are_set():
    p = OpenAIChatParams(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        prompt="Q: {q}",
        system_prompt="Be brief.",
        seed=3,
        response_format=LABEL_SCHEMA,
        extra_body={"top_k": 5},
    )
    body = RequestBuilder(p).body({"q": "why? {not a field}"})
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: why? {not a field}"},
    ]
    assert body["seed"] == 3 and body["top_k"] == 5 and body["max_tokens"] == 256
    assert "temperature" not in body and "stop" not in body
    assert body["response_format"]["json_schema"]["schema"] == LABEL_SCHEMA
    json.dumps(body)  # JSON-able as it is


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"api_key_env": "sk-abc123-not-a-name"}, "not an environment variable name"),
        ({"endpoint": "completions", "system_prompt": "x"}, "system_prompt needs endpoint"),
        ({"extra_body": {"max_tokens": 3}}, "must not set max_tokens"),
        ({"prompt": "{text.upper}"}, "attribute or index access"),
        ({"prompt": "{}"}, "no column name"),
        ({"response_format": {"type": "string"}}, "JSON schema of an object"),
        ({"response_format": {"type": "object", "properties": 3}}, "not a valid JSON schema"),
        ({"base_url": "127.0.0.1:8000"}, "not an http"),
        ({"prompt_tokens_column": "output"}, "'output' is named twice"),
        ({"response_format": {**LABEL_SCHEMA, "properties": {"output": {}}}}, "named twice"),
        ({"finish_reason_column": "output"}, "'output' is named twice"),
        ({"on_truncated": "drop"}, "'keep' or 'fail'"),
    ],
)
def test_params_refuse_mistakes_before_anything_runs(changes, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        OpenAIChatParams(**{"base_url": "http://127.0.0.1:1/v1", "model": "m", **changes})


def test_the_plain_openai_benchmark_loop_runs(llm_server, tmp_path):
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.run import SCRIPTS

    pq.write_table(pa.table({"text": [f"row-{i}" for i in range(4)]}), tmp_path / "in.parquet")
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "plain_openai.py"),
            str(tmp_path / "in.parquet"),
            str(tmp_path / "out"),
            "--base-url",
            llm_server.base_url,
            "--model",
            llm_server.model,
            "--prompt",
            "Say: {text}",
            "--max-tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    bench = json.loads(done.stdout.split("BENCH ", 1)[1])
    assert bench["rows"] == 4 and bench["failed"] == 0 and bench["completion_tokens"] > 0
    assert pq.read_table(tmp_path / "out").column("output").to_pylist() == [CHAT_REPLY] * 4
