"""Before any row is spent: is the server there (preflight), and what will the job cost (the
dry-run estimate), against the real tiny server."""

from __future__ import annotations

import pytest
from fault_proxy import Fault
from llm_server import free_port

from pipeline.contract.errors import ConfigError
from plugins.llm.client import BlockingClient, ClientSettings
from plugins.llm.estimate import TokenCounter, approx_tokens, estimate
from plugins.llm.params import OpenAIChatParams, Price
from plugins.llm.preflight import check_server
from plugins.llm.protocol import RequestBuilder


def test_a_server_that_lists_the_model_passes(llm_server):
    check = check_server(llm_server.base_url, llm_server.model)
    assert llm_server.model in check.models and not check.probed


def test_a_closed_port_names_base_url_at_once():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ConfigError, match="connection refused") as caught:
        check_server(url, "m", timeout_s=2)
    assert caught.value.key == "predictor.params.base_url"
    assert url in str(caught.value)


def test_a_wrong_path_names_base_url_and_says_what_it_should_be(llm_server):
    root = llm_server.base_url.removesuffix("/v1")  # the API is under /v1
    with pytest.raises(ConfigError, match="ending in /v1") as caught:
        check_server(root, llm_server.model)
    assert caught.value.key == "predictor.params.base_url"


def test_a_model_the_server_does_not_serve_names_model(llm_server):
    with pytest.raises(ConfigError, match="refused model 'gpt-nothing'") as caught:
        check_server(llm_server.base_url, "gpt-nothing")
    assert caught.value.key == "predictor.params.model"


def test_a_refused_key_names_the_variable(llm_proxy):
    llm_proxy.add_rule(lambda body: True, Fault.http(401), times=None)
    with pytest.raises(ConfigError, match=r"refused the key in \$MY_KEY") as caught:
        check_server(llm_proxy.base_url, "m", api_key="sk-hidden", api_key_env="MY_KEY")
    assert caught.value.key == "predictor.params.api_key_env"
    assert "sk-hidden" not in str(caught.value)


def test_the_tokenizer_count_is_what_the_server_counts(llm_server):
    p = OpenAIChatParams(
        base_url=llm_server.base_url,
        model=llm_server.model,
        system_prompt="You label {kind}.",
        prompt="Label this: {text}",
        max_tokens=8,
    )
    builder = RequestBuilder(p)
    rows = [{"kind": "films", "text": "a long and winding review"}, {"kind": "x", "text": "y"}]
    counter = TokenCounter(llm_server.model, chat=True)  # the model is a local folder
    client = BlockingClient(ClientSettings.from_params(p))
    try:
        served = client.complete([builder.body(r) for r in rows])
    finally:
        client.close()
    assert [counter.count(builder.texts(r)) for r in rows] == [r.prompt_tokens for r in served]
    assert "tokenizer" in counter.method


def test_without_a_local_tokenizer_the_estimate_is_four_characters_a_token():
    counter = TokenCounter("gpt-4o-mini", chat=True)  # not a folder: the approximation
    assert counter.count(["x" * 40, "y" * 9]) == 10 + 3 + 2 * 4
    assert approx_tokens(["abcd"], chat=False) == 1
    assert "4 characters" in counter.method


def test_the_dry_run_estimate_prices_prompts_and_the_completion_bound():
    counter = TokenCounter(None, chat=False)
    forecast = estimate([["a" * 400]] * 10, counter, max_tokens=50, price=Price(input=2, output=8))
    assert forecast.rows == 10 and forecast.prompt_tokens == 1000
    assert forecast.max_completion_tokens == 500
    assert forecast.prompt_cost == pytest.approx(1000 * 2 / 1e6)
    assert forecast.max_cost == pytest.approx((1000 * 2 + 500 * 8) / 1e6)
    assert "10 requests" in forecast.describe() and "1,000 prompt tokens" in forecast.describe()
    unpriced = estimate([["a"]], counter, max_tokens=None, price=None)
    assert unpriced.prompt_cost is None and unpriced.max_cost is None


def test_the_job_summary_names_requests_retries_tokens_rate_and_cost():
    from plugins.llm.report import job_summary

    counters = {
        "requests": 1012,
        "retries": 12,
        "retries_rate_limited": 10,
        "retries_timeout": 2,
        "rows_ok": 998,
        "rows_failed": 2,
        "prompt_tokens": 45_000,
        "completion_tokens": 9_000,
        "throttled_s": 0.2,
    }
    line = job_summary(counters, seconds=30.0, price=Price(input=1.0, output=2.0))
    assert line == (
        "1,012 requests (12 retries: 10 rate-limited, 2 timeouts), 998 rows answered, 2 failed; "
        "45,000 prompt + 9,000 completion tokens, 300 completion tokens/s; cost 0.063"
    )
    assert job_summary({}) == "0 requests, 0 rows answered; 0 prompt + 0 completion tokens"


def test_the_job_summary_counts_rows_without_content_and_rows_cut_at_max_tokens():
    from plugins.llm.report import job_summary

    counters = {
        "requests": 100,
        "rows_ok": 97,
        "rows_failed": 3,
        "rows_no_content": 2,
        "rows_truncated": 40,
        "prompt_tokens": 1000,
        "completion_tokens": 640,
    }
    assert job_summary(counters, max_tokens=16) == (
        "100 requests, 97 rows answered, 3 failed (2 with no content); 1,000 prompt + 640 "
        "completion tokens; 40 rows cut at max_tokens=16 (finish_reason=length): raise "
        "predictor.params.max_tokens"
    )
    unset = job_summary({**counters, "rows_no_content": 0}, max_tokens=None)
    assert unset.endswith(
        "3 failed; 1,000 prompt + 640 completion tokens; 40 rows cut at max_tokens "
        "(finish_reason=length): raise predictor.params.max_tokens"
    )
