"""The core's hooks for stages that talk to a service, and openai_chat's use of them, without Ray
or a model server: preflight before a real run (not a dry run), a dry run's estimates from a
source preview, job services made once and handed to every worker, the declared columns."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from kit import job_config
from llm_server import free_port

from pipeline.contract.errors import ConfigError
from pipeline.contract.stage import Predictor
from pipeline.execute.services import close_services, start_services
from pipeline.execute.stage_call import StageCall
from pipeline.plan.planner import estimates, plan_job
from plugins.llm.params import ApiKey
from plugins.predictors.openai_chat import OpenAIChat
from plugins.sources.csv_files import CsvSource
from plugins.sources.files import SAMPLE_BYTES, ParquetSource, TextSource
from plugins.sources.json_lines import JsonSource

FAKE_KEY = "sk-fake-HOOKS-0123456789"


def config(base_url: str, rows: list[dict], sink: dict | None = None, **params: Any) -> dict:
    predictor = {"type": "openai_chat", "params": {"base_url": base_url, "model": "m", **params}}
    return job_config(rows, predictor=predictor, sink=sink)


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


# -- preflight -----------------------------------------------------------------------------------


def test_a_real_run_checks_the_server_while_planning_and_names_base_url():
    url = closed_url()
    with pytest.raises(ConfigError, match="connection refused") as caught:
        plan_job(config(url, [{"text": "a"}]))
    assert caught.value.key == "predictor.params.base_url"
    assert url in caught.value.message


def test_a_dry_run_does_not_check_the_server():
    job = config(closed_url(), [{"text": "a"}])
    job["run"]["dry_run"] = True
    assert plan_job(job).maps[-1].name == "openai_chat"


def test_a_server_that_is_down_exits_2_from_the_command_line_naming_base_url(tmp_path):
    url = closed_url()
    done = run_cli(
        "source=items",
        "sink=show",
        "predictor=openai_chat",
        f"predictor.params.base_url={url}",
        "predictor.params.model=m",
        "predictor.params.prompt='{data}'",
        "predictor.params.api_key_env=BULKINFER_FAKE_KEY",
        f"hydra.run.dir={tmp_path}",
        env={"BULKINFER_FAKE_KEY": FAKE_KEY},
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"predictor.params.base_url: cannot reach {url}" in done.stderr
    assert "Traceback" not in done.stderr
    assert FAKE_KEY not in done.stdout + done.stderr
    metrics = (tmp_path / "metrics.json").read_text()
    assert '"status": "failed"' in metrics and FAKE_KEY not in metrics


# -- dry-run estimates ---------------------------------------------------------------------------


def test_the_dry_run_prints_requests_prompt_tokens_and_cost_under_the_plan(tmp_path):
    texts = ["Complete this", "for me", "and this one too"]
    done = run_cli(
        "source=items",
        "sink=show",
        "predictor=openai_chat",
        f"predictor.params.base_url={closed_url()}",  # a dry run sends nothing
        "predictor.params.model=gpt-4o-mini",
        "predictor.params.prompt='Say: {data}'",
        "predictor.params.max_tokens=10",
        "predictor.params.price_per_million_tokens={input: 1000, output: 2000}",
        f"source.params.items={json.dumps(texts)}",
        "run.dry_run=true",
        f"hydra.run.dir={tmp_path}",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    prompt = sum(math.ceil(len(f"Say: {t}") / 4) + 4 for t in texts)  # the stated approximation
    lines = done.stdout.splitlines()
    at = lines.index("estimates (dry run, nothing sent):")
    assert lines[at + 1] == "  input: 3 rows (exact: inline items)"
    assert lines[at + 2] == (
        f"  predictor: 3 requests, about {prompt} prompt tokens (approximate: 1 token per 4 "
        f"characters), at most 30 completion tokens; cost: prompts {prompt * 1000 / 1e6:.4g}, "
        f"at most {(prompt * 1000 + 30 * 2000) / 1e6:.4g} in all"
    )


def test_an_estimate_scales_the_previewed_rows_to_the_whole_input(tmp_path):
    pq.write_table(pa.table({"text": ["abcd" * 3] * 3000}), tmp_path / "in.parquet")
    job = config(closed_url(), [{"text": "x"}], endpoint="completions", max_tokens=None)
    job["source"] = {"type": "parquet", "params": {"path": str(tmp_path / "in.parquet")}}
    job["run"]["dry_run"] = True
    lines = estimates(plan_job(job), limit=1000)
    assert lines[1] == "  input: 3,000 rows (exact: the footers of 1 Parquet file(s))"
    assert lines[2] == (
        "  predictor: 3,000 requests, about 9,000 prompt tokens (approximate: 1 token per 4 "
        "characters; 1,000 rows counted, scaled to 3,000)"
    )


def test_a_template_column_made_by_an_earlier_stage_is_not_estimated():
    job = config(closed_url(), [{"data": "x"}], prompt="{text}")
    job["preprocessors"] = [{"type": "rename_columns", "params": {"mapping": {"data": "text"}}}]
    job["run"]["dry_run"] = True
    lines = estimates(plan_job(job))
    assert lines[-1].startswith("  predictor: not estimated: the template reads column 'text'")


def test_a_job_whose_stages_estimate_nothing_reads_no_preview():
    job = config(closed_url(), [{"data": "x"}])
    job["predictor"] = None
    job["preprocessors"] = [{"type": "rename_columns", "params": {"mapping": {"data": "text"}}}]
    job["run"]["dry_run"] = True
    assert estimates(plan_job(job)) == []


# -- source previews -----------------------------------------------------------------------------


def test_file_sources_preview_their_first_rows_with_the_row_count(tmp_path):
    rows = [{"id": i, "text": f"row {i}"} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows[:25]), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[25:]), tmp_path / "b.parquet")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"{i},row {i}\n" for i in range(40)))
    cases = [
        (ParquetSource, tmp_path / "a.parquet", tmp_path, 40),
        (JsonSource, tmp_path / "in.jsonl", tmp_path / "in.jsonl", 40),
        (CsvSource, tmp_path / "in.csv", tmp_path / "in.csv", 40),
    ]
    for cls, _, path, total in cases:
        source = cls()
        params = cls.Params(path=str(path))
        preview = source.preview(params, 30)
        assert preview.rows.to_pylist() == rows[:30], cls.__name__
        assert preview.rows.schema == source.schema(params)
        assert (preview.total_rows, preview.how.split(":")[0]) == (total, "exact")


def test_a_large_text_input_has_its_rows_estimated_from_the_sample(tmp_path):
    lines = [f"line number {i} " + "x" * (i % 50) for i in range(60_000)]
    (tmp_path / "big.txt").write_text("\n".join(lines) + "\n")
    assert (tmp_path / "big.txt").stat().st_size > SAMPLE_BYTES
    preview = TextSource().preview(TextSource.Params(path=str(tmp_path / "big.txt")), 5)
    assert preview.rows.column("text").to_pylist() == lines[:5]
    assert preview.how.startswith("estimated:")
    assert abs(preview.total_rows - len(lines)) < 0.05 * len(lines)


# -- job services --------------------------------------------------------------------------------


class Closable:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class WithServices(Predictor):
    """A stage that asks for a job service and keeps what it was built with."""

    made: list[Closable] = []

    @classmethod
    def job_services(cls, params: Any) -> dict[str, Any]:
        cls.made.append(Closable())
        return {"shared": cls.made[-1]}

    def __init__(self, params: Any, services: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.services = services

    def __call__(self, batch: Any) -> Any:
        return batch


class Plain(Predictor):
    def __call__(self, batch: Any) -> Any:
        return batch


def test_job_services_are_made_once_handed_to_the_stage_and_closed_at_the_end():
    plan = plan_job(config(closed_url(), [{"text": "a"}]), inspect=False)
    plan = replace(plan, maps=(replace(plan.maps[0], plugin=WithServices),))
    services = start_services(plan)
    assert services == {"predictor": {"shared": WithServices.made[-1]}}
    assert len(WithServices.made) == 1
    params = plan.maps[0].params
    call = StageCall(
        WithServices, params, "predictor", None, eager=True, services=services["predictor"]
    )
    assert call._stage.services == {"shared": WithServices.made[-1]}
    close_services(services)
    assert WithServices.made[-1].closed == 1


def test_a_stage_without_services_is_built_with_its_params_alone():
    plan = plan_job(config(closed_url(), [{"text": "a"}]), inspect=False)
    plan = replace(plan, maps=(replace(plan.maps[0], plugin=Plain),))
    assert start_services(plan) == {}
    assert isinstance(StageCall(Plain, None, "predictor", None, eager=True)._stage, Plain)


def test_openai_chat_hands_the_drivers_key_to_its_workers_never_printing_it(monkeypatch):
    monkeypatch.setenv("BULKINFER_FAKE_KEY", FAKE_KEY)
    params = OpenAIChat.Params(base_url=closed_url(), model="m", api_key_env="BULKINFER_FAKE_KEY")
    services = OpenAIChat.job_services(params)  # no limits: no limiter actor, no Ray
    assert set(services) == {"api_key"} and services["api_key"].value == FAKE_KEY
    assert FAKE_KEY not in repr(services) and FAKE_KEY not in str(services["api_key"])
    again = pickle.loads(pickle.dumps(services["api_key"]))
    assert (again.value, repr(again)) == (FAKE_KEY, repr(services["api_key"]))
    monkeypatch.delenv("BULKINFER_FAKE_KEY")
    assert OpenAIChat.job_services(params) == {}
    assert ApiKey("a").token != ApiKey("a").token  # two jobs' keys never look alike


# -- declared columns ----------------------------------------------------------------------------


def test_openai_chat_declares_the_text_token_finish_reason_and_structured_columns():
    params = OpenAIChat.Params(
        base_url=closed_url(),
        model="m",
        prompt="{title}: {text}",
        prompt_tokens_column="n_in",
        completion_tokens_column="n_out",
        finish_reason_column="why",
        response_format={
            "type": "object",
            "properties": {
                "label": {"enum": ["a", "b"]},
                "score": {"type": "number"},
                "count": {"type": ["integer", "null"]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
        },
    )
    schema = OpenAIChat.output_schema(
        params, pa.schema([("title", pa.string()), ("text", pa.string())])
    )
    assert {f.name: str(f.type) for f in schema} == {
        "title": "string",
        "text": "string",
        "output": "string",
        "n_in": "int64",
        "n_out": "int64",
        "why": "string",
        "label": "string",
        "score": "double",
        "count": "int64",
        "tags": "string",  # JSON text
    }


def test_openai_chat_declares_no_finish_reason_column_unless_asked():
    params = OpenAIChat.Params(base_url=closed_url(), model="m")
    schema = OpenAIChat.output_schema(params, pa.schema([("text", pa.string())]))
    assert schema.names == ["text", "output"]
