"""Table sinks in the plan, without Ray: checked before any model loads, dry runs create nothing,
an unfinished job is refused without run.resume, credentials never reach the printed plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kit import job_config

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.source import WorkUnit
from pipeline.output.records import JobRecord
from pipeline.output.tables import job_store
from pipeline.plan.planner import plan_job, table_target
from pipeline.plan.report import describe

ROWS = [{"id": i, "text": f"t{i}"} for i in range(4)]


def sinks(where: Path) -> dict[str, dict[str, Any]]:
    return {
        "lance": {"path": str(where / "db" / "items.lance")},
        "iceberg": {
            "catalog": {
                "type": "sql",
                "uri": f"sqlite:///{where}/catalog.db",
                "warehouse": f"file://{where}/warehouse",
            },
            "table": "ns.items",
        },
        "sql": {"url": f"sqlite:///{where}/out.db", "table": "items"},
    }


def config(sink: str, params: dict[str, Any], **run: Any) -> dict[str, Any]:
    return job_config(ROWS, sink={"type": sink, "params": params}, run={"progress": False, **run})


@pytest.mark.parametrize("sink", ["lance", "iceberg", "sql"])
def test_a_dry_run_plans_the_job_and_creates_nothing(sink, tmp_path):
    where = tmp_path / "out"
    where.mkdir()
    plan = plan_job(config(sink, sinks(where)[sink], dry_run=True))
    assert plan.output_schema.names == ["id", "text"]
    assert f"sink '{sink}'" in describe(plan)
    assert list(where.iterdir()) == []


@pytest.mark.parametrize("sink", ["lance", "iceberg", "sql"])
def test_a_column_declared_null_is_refused_unless_column_types_types_it(sink, tmp_path):
    rows = [{"id": i, "text": f"t{i}", "later": None} for i in range(3)]
    job = config(sink, sinks(tmp_path)[sink])
    job["source"]["params"]["items"] = rows
    with pytest.raises(DataError, match="column 'later' has no type until") as caught:
        plan_job(job)
    assert caught.value.key == "sink.params.column_types.later"
    job["sink"]["params"]["column_types"] = {"later": "float32"}
    plan_job(job)


@pytest.mark.parametrize("sink", ["lance", "iceberg", "sql"])
def test_an_unfinished_job_is_refused_without_resume_and_with_another_config(sink, tmp_path):
    params = sinks(tmp_path)[sink]
    plan = plan_job(config(sink, params))
    store = job_store(table_target(plan))
    store.start(
        JobRecord.new(plan.fingerprint, plan.dataflow, [WorkUnit("a")], "error", "x").to_json()
    )
    store.add_marker({"unit": "w-a", "rows": 4, "part": "a", "ranges": [[0, 4]], "written": []})
    with pytest.raises(DataError, match=r"unfinished run .*\(4 rows written\)") as c:
        plan_job(config(sink, params))
    assert c.value.key == "run.resume"
    assert plan_job(config(sink, params, resume=True)).resumes
    changed = config(sink, params, resume=True)
    changed["source"]["params"]["items"] = ROWS[:2]
    with pytest.raises(ConfigError, match="cannot resume: the config changed") as c:
        plan_job(changed)
    assert c.value.key.startswith("source.params.items")
    store.remove()
    assert store.load() is None and not plan_job(config(sink, params, resume=True)).resumes


def test_the_sql_job_record_lives_in_the_database_beside_the_table(tmp_path):
    import sqlalchemy as sa

    params = sinks(tmp_path)["sql"]
    store = job_store(table_target(plan_job(config("sql", params))))
    store.start({"fingerprint": "f", "units": []})
    engine = sa.create_engine(params["url"])
    assert sorted(sa.inspect(engine).get_table_names()) == [
        "items__bulkinfer_job",
        "items__bulkinfer_units",
    ]
    engine.dispose()
    assert "drop tables items__bulkinfer_job" in store.start_over()


def test_sql_credentials_come_from_a_variable_and_never_reach_the_plan(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/out.db"
    with pytest.raises(ConfigError, match="the URL holds a password") as caught:
        plan_job(config("sql", {"url": "postgresql://me:hunter2@db/x", "table": "t"}))
    assert caught.value.key == "sink.params.url"
    assert "hunter2" not in str(caught.value)
    monkeypatch.setenv("BULKINFER_TEST_SECRET", "s3cr3t-value")
    params = {"url": url, "table": "items", "password_env": "BULKINFER_TEST_SECRET"}
    text = describe(plan_job(config("sql", params)))
    assert "s3cr3t-value" not in text and "BULKINFER_TEST_SECRET" not in text


def test_dead_letters_need_a_file_sink(tmp_path):
    job = config("lance", sinks(tmp_path)["lance"])
    job["preprocessors"] = [
        {"type": "filter", "params": {"condition": "id >= 0"}, "stage": {"on_error": "dead_letter"}}
    ]
    with pytest.raises(ConfigError, match="writes no files") as caught:
        plan_job(job)
    assert caught.value.key == "preprocessors[0].stage.on_error"


def test_planning_a_table_sink_imports_no_ray(tmp_path):
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from pipeline.plan.planner import plan_job\n"
        f"for sink, params in json.loads({json.dumps(json.dumps(sinks(tmp_path)))}).items():\n"
        "    plan_job({'source': {'type': 'items', 'params': {'items': ['a']}},\n"
        "              'sink': {'type': sink, 'params': params}})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


UNREACHABLE = {
    "lance": {
        "path": "s3://bucket/items.lance",
        "storage_options": {
            "aws_endpoint": "http://127.0.0.1:9",
            "aws_access_key_id": "k",
            "aws_secret_access_key": "s",
            "aws_region": "us-east-1",
            "allow_http": "true",
        },
    },
    "iceberg": {"catalog": {"type": "rest", "uri": "http://127.0.0.1:9"}, "table": "ns.items"},
    "sql": {"url": "postgresql+psycopg://someone@127.0.0.1:9/db", "table": "items"},
}


@pytest.mark.parametrize("sink", ["lance", "iceberg", "sql"])
def test_a_target_nothing_answers_for_is_one_error_naming_the_key_and_the_cause(sink):
    with pytest.raises(DataError) as caught:
        plan_job(config(sink, UNREACHABLE[sink], dry_run=True))
    assert caught.value.key == {"lance": "sink.params.path"}.get(sink, "sink.params.table")
    assert "127.0.0.1" in caught.value.message
