"""Preprocessors in real jobs: listed by name (conf/preprocessor/) or written inline."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline.app.main import run_with_overrides
from pipeline.contract.errors import ColumnNotFoundError, ConfigError

ITEMS = "source.params.items=['Complete this','for me','x','a longer sentence here']"


def run(tmp_path, *overrides):
    out = tmp_path / "out"
    run_with_overrides(
        ["source=items", ITEMS, "~predictor", f"sink.params.path={out}", "run.progress=false"]
        + list(overrides)
    )
    return pq.read_table(out)


def test_a_preprocessor_by_name_and_one_inline_both_run(ray_session, tmp_path):
    out = run(
        tmp_path,
        "preprocessors=[rename_columns,{type:filter,params:{condition:'len(text) > 2'}}]",
    )
    assert out.column_names == ["text"]  # renamed from the items source's 'data'
    assert sorted(out.column("text").to_pylist()) == [
        "Complete this",
        "a longer sentence here",
        "for me",
    ]


def test_select_drop_and_rename_chain(ray_session, tmp_path):
    out = run(
        tmp_path,
        "source.params.items=[{id:1,a:x,b:y,c:z},{id:2,a:p,b:q,c:r}]",
        "preprocessors=[{type:drop_columns,params:{columns:[c]}},"
        "{type:rename_columns,params:{mapping:{a:first}}},"
        "{type:select_columns,params:{columns:[first,id]}}]",
    )
    assert out.column_names == ["first", "id"]
    assert sorted(out.to_pylist(), key=lambda r: r["id"]) == [
        {"first": "x", "id": 1},
        {"first": "p", "id": 2},
    ]


def test_tokenize_by_name_uses_the_predictors_model(ray_session, tmp_path):
    out = tmp_path / "out"
    run_with_overrides(
        [
            "source=items",
            "source.params.column=text",
            "preprocessors=[tokenize]",
            "predictor.params.input_column=input_ids",
            f"sink.params.path={out}",
            "run.progress=false",
        ]
    )
    table = pq.read_table(out)
    assert {"text", "input_ids", "attention_mask", "embedding"} <= set(table.column_names)
    ids = table.column("input_ids").to_pylist()
    assert all(row[0] == 101 and row[-1] == 102 for row in ids)  # MiniLM's [CLS] ... [SEP]


@pytest.mark.parametrize(
    ("preprocessors", "key"),
    [
        ("[{type:drop_columns,params:{columns:[nope]}}]", "preprocessors[0].params.columns"),
        (
            "[rename_columns,{type:filter,params:{condition:'data == 1'}}]",
            "preprocessors[1].params.condition",
        ),
        ("[{type:select_columns,params:{columns:[text]}}]", "preprocessors[0].params.columns"),
    ],
)
def test_a_missing_column_is_refused_with_the_stage_key(ray_session, tmp_path, preprocessors, key):
    with pytest.raises(ColumnNotFoundError) as error:
        run(tmp_path, f"preprocessors={preprocessors}")
    assert error.value.key == key
    assert not (tmp_path / "out").exists()


def test_an_unsafe_condition_is_refused_before_ray_starts(tmp_path):
    with pytest.raises(ConfigError) as error:
        run_with_overrides(
            [
                "run.dry_run=true",
                f"sink.params.path={tmp_path}/out",
                "preprocessors=[{type:filter,params:{condition:'__import__(\"os\")'}}]",
            ]
        )
    assert error.value.key == "preprocessors[0].params.condition"
    assert "not an allowed function" in error.value.message


def test_an_unknown_preprocessor_name_says_so():
    with pytest.raises(ConfigError) as error:
        run_with_overrides(["run.dry_run=true", "preprocessors=[tokenise]"])
    assert error.value.key == "preprocessors[0]"
    assert "tokenise" in error.value.message
