"""openai_chat in real jobs: a real server (transformers serve on a tiny chat model), behind a
proxy that injects faults and counts what each row got, on the module's local Ray.

The tiny model answers every chat prompt with CHAT_REPLY. Rows carry ``row-N`` in their text,
so the proxy can tell which row each request was for and check that every row got exactly one
clean answer, however many faults were injected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contracts import PredictorContract, is_string
from fault_proxy import Fault, FaultProxy
from omegaconf import OmegaConf

from pipeline.app.metrics import JobInfo
from pipeline.contract.errors import BulkInferError
from plugins.samples.models import CHAT_REPLY

pytestmark = pytest.mark.ray  # jobs on local Ray against a real server

KEY_ENV = "BULKINFER_TEST_OPENAI_KEY"
FAKE_KEY = "sk-fake-JOB-SECRET-4242"


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "text": f"row-{i} tell me something"} for i in range(start, start + n)]


def job(
    llm_proxy: FaultProxy,
    model: str,
    items: list[dict[str, Any]],
    out: Path | None,
    params: dict[str, Any] | None = None,
    stage: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """items -> openai_chat (through the proxy) -> Parquet at ``out`` (or show when None)."""
    return {
        "source": {"type": "items", "params": {"items": items}},
        "predictor": {
            "type": "openai_chat",
            "params": {
                "base_url": llm_proxy.base_url,
                "model": model,
                "max_tokens": 16,
                "temperature": 0,
                **(params or {}),
            },
            "stage": stage or {},
        },
        "sink": {"type": "parquet", "params": {"path": str(out)}} if out else {"type": "show"},
        "run": {"progress": False, **(run or {})},
    }


def run_job(config: dict[str, Any]):
    from pipeline.execute.runner import run_job

    return run_job(config)


def run_with_metrics(config: dict[str, Any], folder: Path):
    """The job as the command line runs it: metrics.json in ``folder``, remarks printed."""
    from pipeline.app.main import run

    return run(OmegaConf.create(config), JobInfo(output_dir=str(folder)))


def ids(path: Path) -> list[int]:
    return sorted(pq.read_table(path).column("id").to_pylist())


def dead_letters(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for file in sorted((path / "_errors").glob("*.jsonl"))
        for line in file.read_text().splitlines()
    ]


# -- the contract every predictor keeps ----------------------------------------------------------


class TestContract(PredictorContract):
    predictor = "openai_chat"
    output_types = {"output": is_string, "n_out": pa.types.is_int64, "why": is_string}
    rows = rows(5)

    @pytest.fixture(scope="class")
    def params(self, llm_server) -> dict[str, Any]:
        return {
            "base_url": llm_server.base_url,
            "model": llm_server.model,
            "max_tokens": 16,
            "temperature": 0,
            "completion_tokens_column": "n_out",
            "finish_reason_column": "why",
        }

    def test_every_row_gets_the_models_reply_its_token_count_and_finish_reason(self, output):
        assert output.column("output").to_pylist() == [CHAT_REPLY] * len(self.rows)
        assert all(n > 0 for n in output.column("n_out").to_pylist())
        assert output.column("why").to_pylist() == ["stop"] * len(self.rows)


# -- faults, retries and on_error ----------------------------------------------------------------


def test_every_fault_is_retried_and_every_row_answered_exactly_once(
    ray_session, llm_server, llm_proxy, tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)  # the driver's key; the workers get it from the core
    for row, fault in [
        ("row-1 ", Fault.http(429, retry_after="1")),
        ("row-2 ", Fault.http(500)),
        ("row-3 ", Fault.slow(6.0)),  # past timeout_s
        ("row-4 ", Fault.malformed()),
        ("row-6 ", Fault.drop()),
    ]:
        llm_proxy.add_rule(lambda body, row=row: row.encode() in body, fault)
    llm_proxy.add_rule(lambda body: b"row-5 " in body, Fault.http(503), times=None)  # for good
    out = tmp_path / "out"
    config = job(
        llm_proxy,
        llm_server.model,
        rows(12),
        out,
        params={
            "api_key_env": KEY_ENV,
            "timeout_s": 3,
            "max_retries": 2,
            "max_concurrent_requests": 4,
            "prompt_tokens_column": "n_in",
            "price_per_million_tokens": {"input": 1000, "output": 2000},
        },
        stage={"batch_size": 6, "on_error": "dead_letter", "max_error_rate": 0.5},
    )
    run_with_metrics(config, tmp_path / "run")

    # Every row but the one that failed for good came out once, with the model's reply.
    table = pq.read_table(out)
    assert ids(out) == [i for i in range(12) if i != 5]
    assert table.column("output").to_pylist() == [CHAT_REPLY] * 11
    assert llm_proxy.clean_answers() == {f"row-{i}": 1 for i in range(12) if i != 5}
    # ...and that one was tried 1 + max_retries times, then set aside with its error.
    assert len([r for r in llm_proxy.records if r.key == "row-5"]) == 3
    (letter,) = dead_letters(out)
    assert letter["row"]["id"] == 5 and letter["stage"] == "predictor"
    assert "gave up after 3 requests; the last: HTTP 503" in letter["error"]
    # Retry-After was waited out.
    row1 = [r.arrived for r in llm_proxy.records if r.key == "row-1"]
    assert len(row1) == 2 and row1[1] - row1[0] >= 1.0

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    counters = metrics["counters"]["predictor"]
    expected = {
        "requests": 19,  # 12 rows + 5 single faults + 2 more tries of row 5
        "retries": 7,
        "retries_rate_limited": 1,
        "retries_server": 3,
        "retries_timeout": 1,
        "retries_malformed": 1,
        "retries_connection": 1,
        "rows_ok": 11,
        "rows_failed": 1,
    }
    assert {k: counters[k] for k in expected} == expected
    assert counters["prompt_tokens"] == sum(table.column("n_in").to_pylist())
    cost = (counters["prompt_tokens"] * 1000 + counters["completion_tokens"] * 2000) / 1e6
    assert counters["cost"] == pytest.approx(cost)
    (summary,) = metrics["summaries"]
    assert summary.startswith(
        "predictor: 19 requests (7 retries: 1 rate-limited, 3 server errors, 1 timeouts, "
        "1 connection errors, 1 malformed replies), 11 rows answered, 1 failed; "
        f"{counters['prompt_tokens']:,.0f} prompt + {counters['completion_tokens']:,.0f} "
        "completion tokens, "
    )
    assert f"cost {cost:.4g}" in summary
    printed = capsys.readouterr()
    assert f"bulkinfer: {summary}" in printed.out.splitlines()

    # The key went to the server on every request, and nowhere else.
    assert {r.authorization for r in llm_proxy.records} == {f"Bearer {FAKE_KEY}"}
    everything = printed.out + printed.err + caplog.text + json.dumps(metrics)
    everything += "".join(p.read_text() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert FAKE_KEY not in everything


def test_on_error_skip_drops_the_row_that_fails_every_retry(
    ray_session, llm_server, llm_proxy, tmp_path
):
    llm_proxy.add_rule(lambda body: b"row-2 " in body, Fault.http(503), times=None)
    out = tmp_path / "out"
    config = job(
        llm_proxy,
        llm_server.model,
        rows(4),
        out,
        params={"max_retries": 1},
        stage={"on_error": "skip", "max_error_rate": 0.5},
    )
    result = run_job(config)
    assert ids(out) == [0, 1, 3] and result.rows_set_aside == 1
    assert not (out / "_errors").exists()
    assert llm_proxy.clean_answers() == {"row-0": 1, "row-1": 1, "row-3": 1}
    assert len([r for r in llm_proxy.records if r.key == "row-2"]) == 2


def test_on_error_fail_stops_the_job_naming_the_stage(ray_session, llm_server, llm_proxy, tmp_path):
    llm_proxy.add_rule(lambda body: b"row-1 " in body, Fault.http(500), times=None)
    out = tmp_path / "out"
    with pytest.raises(BulkInferError) as caught:
        run_job(job(llm_proxy, llm_server.model, rows(3), out, params={"max_retries": 0}))
    assert caught.value.key == "predictor"
    assert "stage 'openai_chat' failed on a batch of 3 rows" in caught.value.message
    assert "1 of 3 rows failed" in caught.value.message and "HTTP 500" in caught.value.message
    assert "Set predictor.stage.on_error=skip or dead_letter" in caught.value.message
    assert not out.exists()


def test_a_resumed_job_sends_only_the_requests_that_never_got_an_answer(
    ray_session, llm_server, llm_proxy, tmp_path
):
    """A failed run keeps every answer it got in its journal, written or not: the resumed run
    sends only the request that failed, and every row is paid for exactly once."""
    from pipeline.output.progress import UNIT_SHIFT
    from pipeline.output.staging import STAGING_SUFFIX

    outage = {"on": True}
    llm_proxy.add_rule(lambda body: outage["on"] and b"row-5 " in body, Fault.http(503), times=None)
    out = tmp_path / "out"
    config = job(
        llm_proxy,
        llm_server.model,
        rows(8),
        out,
        params={"max_retries": 0},
        stage={"batch_size": 4},
        run={"unit_rows": 4},  # two work units: rows 0-3 and 4-7
    )
    with pytest.raises(BulkInferError, match="HTTP 503") as caught:
        run_job(config)
    assert "answers kept" in caught.value.message and "run.resume=true" in caught.value.message
    first_run = len(llm_proxy.records)
    answered = set(llm_proxy.clean_answers())
    written = set()
    for record in Path(str(out) + STAGING_SUFFIX).glob("units/*.json"):
        for start, stop in json.loads(record.read_text())["ranges"]:
            written |= {
                (r >> UNIT_SHIFT) * 4 + (r & ((1 << UNIT_SHIFT) - 1)) for r in range(start, stop)
            }
    assert 5 not in written

    outage["on"] = False
    config["run"]["resume"] = True
    result = run_job(config)
    again = [r.key for r in llm_proxy.records[first_run:] if r.key is not None]  # not the preflight
    assert sorted(again) == sorted(f"row-{i}" for i in range(8) if f"row-{i}" not in answered)
    assert "row-5" in again
    assert result.rows_resumed == len(written)
    assert ids(out) == list(range(8))
    assert llm_proxy.clean_answers() == {f"row-{i}": 1 for i in range(8)}


# -- what the replies say: cut at max_tokens, no content -------------------------------------------


def test_cut_and_empty_replies_are_row_errors_counted_and_set_aside(
    ray_session, llm_server, llm_proxy, tmp_path
):
    """Under on_truncated: fail a reply cut at max_tokens is a row error like any other, and so is
    a reply with content: null: on_error sets them aside; finish_reason is a column."""
    cut = Fault.answer('{"label": "pos', finish_reason="length")
    llm_proxy.add_rule(lambda body: b"row-1 " in body, cut)
    llm_proxy.add_rule(lambda body: b"row-2 " in body, Fault.answer(None))
    out = tmp_path / "out"
    config = job(
        llm_proxy,
        llm_server.model,
        rows(5),
        out,
        params={"on_truncated": "fail", "finish_reason_column": "why"},
        stage={"on_error": "dead_letter", "max_error_rate": 0.5},
    )
    run_with_metrics(config, tmp_path / "run")

    assert ids(out) == [0, 3, 4]
    assert pq.read_table(out).column("why").to_pylist() == ["stop"] * 3
    letters = {d["row"]["id"]: d["error"] for d in dead_letters(out)}
    assert set(letters) == {1, 2}
    assert (
        "TruncatedReplyError: the reply was cut at max_tokens (finish_reason=length); raise "
        "predictor.params.max_tokens (now 16), or set predictor.params.on_truncated=keep"
    ) in letters[1]
    assert "NoContentError: the server returned no content (finish_reason=stop)" in letters[2]
    assert len([r for r in llm_proxy.records if r.key in ("row-1", "row-2")]) == 2  # not retried

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    counters = metrics["counters"]["predictor"]
    expected = {
        "requests": 5,
        "retries": 0,
        "rows_ok": 3,
        "rows_failed": 2,
        "rows_no_content": 1,
        "rows_truncated": 1,
    }
    assert {k: counters[k] for k in expected} == expected
    (summary,) = metrics["summaries"]
    assert summary.startswith(
        "predictor: 5 requests, 3 rows answered, 2 failed (1 with no content); "
    )
    assert summary.endswith(
        "; 1 rows cut at max_tokens=16 (finish_reason=length): raise predictor.params.max_tokens"
    )


# -- structured output ---------------------------------------------------------------------------


LABELS = {
    "type": "object",
    "properties": {
        "label": {"enum": ["positive", "negative"]},
        "score": {"type": "number"},
    },
    "required": ["label"],
}


def test_structured_replies_become_columns_and_the_others_are_set_aside(
    ray_session, llm_server, llm_proxy, tmp_path
):
    llm_proxy.add_rule(lambda body: b"row-2 " in body, Fault.answer('{"label": "maybe"}'))
    llm_proxy.add_rule(lambda body: b"row-3 " in body, Fault.answer("Sure! Here you go."))
    out = tmp_path / "out"
    config = job(
        llm_proxy,
        llm_server.model,
        rows(5),
        out,
        params={"response_format": LABELS},
        stage={"on_error": "dead_letter", "max_error_rate": 0.5},
    )
    run_job(config)
    table = pq.read_table(out)
    assert ids(out) == [0, 1, 4]
    assert table.column("label").to_pylist() == ["positive"] * 3
    assert table.schema.field("label").type == pa.string()
    assert table.schema.field("score").type == pa.float64()
    assert table.column("score").null_count == 3  # the model leaves it out
    letters = {d["row"]["id"]: d["error"] for d in dead_letters(out)}
    assert "does not match response_format at label" in letters[2]
    assert "the reply is not JSON" in letters[3]
    # A reply that breaks the schema is the model's answer: not asked again.
    assert len([r for r in llm_proxy.records if r.key in ("row-2", "row-3")]) == 2


# -- one rate limit for the whole job ------------------------------------------------------------


def test_two_workers_hold_one_requests_per_minute_limit(
    ray_session, llm_server, llm_proxy, tmp_path
):
    import ray

    # Each request is held 0.6 s and each worker sends one at a time, so the proxy sees two
    # requests in flight only when both workers send; 2 a second for the job (a burst of 2).
    llm_proxy.add_rule(lambda body: True, Fault.slow(0.6), times=None)
    out = tmp_path / "out"
    config = job(
        llm_proxy,
        llm_server.model,
        rows(20),
        out,
        params={"requests_per_minute": 120, "max_concurrent_requests": 1, "timeout_s": 30},
        stage={"concurrency": 2, "batch_size": 4},
    )
    run_job(config)
    assert ids(out) == list(range(20))
    assert llm_proxy.max_in_flight == 2  # both workers were sending
    arrivals = sorted(llm_proxy.arrivals("/chat/completions"))
    for i, start in enumerate(arrivals):  # the burst plus 2 a second, +1 for the network
        assert sum(1 for t in arrivals[i:] if t - start < 1.0) <= 2 + 2 + 1
    # (20 - 2) / 2 = 9 s at the job's limit; two workers each at 2 a second would need ~6 s.
    assert arrivals[-1] - arrivals[0] >= 8.0
    limiters = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if "llm-limits" in a["name"]
    ]
    assert limiters == []  # the job's limiter actor ended with the job
