"""Every built-in source and sink, end to end on local Ray (one Ray start for the module)."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.csv
import pyarrow.fs
import pyarrow.parquet as pq
import pytest

from pipeline.app.main import run_with_overrides
from pipeline.contract.errors import ColumnNotFoundError, DataError

ROWS = [{"id": i, "text": f"sentence number {i}"} for i in range(12)]


pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the module


@pytest.fixture
def inputs(tmp_path):
    table = pa.Table.from_pylist(ROWS)
    paths = {
        "parquet": tmp_path / "in.parquet",
        "csv": tmp_path / "in.csv",
        "json": tmp_path / "in.jsonl",
        "json.gz": tmp_path / "in.jsonl.gz",
        "csv.gz": tmp_path / "in.csv.gz",
        "text": tmp_path / "in.txt",
    }
    pq.write_table(table, paths["parquet"])
    pyarrow.csv.write_csv(table, paths["csv"])
    paths["json"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    paths["json.gz"].write_bytes(gzip.compress(paths["json"].read_bytes()))
    paths["csv.gz"].write_bytes(gzip.compress(paths["csv"].read_bytes()))
    paths["text"].write_text("".join(r["text"] + "\n\n" for r in ROWS))  # blank lines dropped
    return paths


def read_back(path) -> list[dict]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: r.get("id", r.get("text")))


def run_copy(source: str, source_path, out, *extra: str):
    return run_with_overrides(
        [
            f"source={source}",
            f"source.params.path={source_path}",
            "~predictor",
            "sink=parquet",
            f"sink.params.path={out}",
            "run.progress=false",
            *extra,
        ]
    )


@pytest.mark.parametrize("source", ["parquet", "csv", "json", "json.gz", "csv.gz"])
def test_a_file_source_reaches_the_sink_row_for_row(source, inputs, tmp_path):
    # a .gz file (or .bz2, .br, .zst, .lz4) of text is decompressed as it is read
    result = run_copy(source.partition(".")[0], inputs[source], tmp_path / "out")
    assert read_back(tmp_path / "out") == ROWS
    assert (result.rows_in, result.rows_out) == (12, 12)
    assert result.output == str(tmp_path / "out")


def test_the_text_source_gives_a_row_per_non_empty_line(inputs, tmp_path):
    run_copy("text", inputs["text"], tmp_path / "out", "source.params.column=sentence")
    assert sorted(r["sentence"] for r in pq.read_table(tmp_path / "out").to_pylist()) == sorted(
        r["text"] for r in ROWS
    )


def test_a_source_reads_only_the_columns_asked_for(inputs, tmp_path):
    run_copy("parquet", inputs["parquet"], tmp_path / "out", "source.params.columns=[text]")
    assert pq.read_table(tmp_path / "out").column_names == ["text"]


def test_items_in_the_config_become_rows(tmp_path):
    run_with_overrides(
        ["source=items", "~predictor", "sink=json", f"sink.params.path={tmp_path / 'out'}"]
    )
    lines = [
        json.loads(x)
        for f in (tmp_path / "out").glob("*.json*")
        for x in f.read_text().split("\n")
        if x
    ]
    assert sorted(r["data"] for r in lines) == ["Complete this", "for me"]


@pytest.mark.parametrize("sink", ["csv", "json"])
def test_text_sinks_write_every_row(sink, inputs, tmp_path):
    run_copy("parquet", inputs["parquet"], tmp_path / "out", f"sink={sink}")
    files = [f for f in (tmp_path / "out").iterdir() if not f.name.startswith("_")]
    assert files
    text = "".join(f.read_text() for f in files)
    assert all(r["text"] in text for r in ROWS)


def test_the_show_sink_prints_the_first_rows(inputs, tmp_path, capsys):
    result = run_with_overrides(
        [
            "source=parquet",
            f"source.params.path={inputs['parquet']}",
            "~predictor",
            "sink=show",
            "sink.params.limit=3",
            "run.progress=false",
        ]
    )
    printed = capsys.readouterr().out
    assert printed.count("'text': 'sentence number") == 3
    assert result.rows_out == 3


def test_an_existing_output_is_refused_unless_overwrite_is_asked(inputs, tmp_path):
    out = tmp_path / "out"
    run_copy("parquet", inputs["parquet"], out)
    with pytest.raises(DataError, match="output already exists") as err:
        run_copy("parquet", inputs["parquet"], out)
    assert err.value.key == "sink.params.path"
    run_copy("parquet", inputs["parquet"], out, "sink.params.mode=overwrite")
    assert read_back(out) == ROWS


def test_a_missing_input_names_the_path(tmp_path):
    with pytest.raises(DataError, match="input path does not exist") as err:
        run_copy("parquet", tmp_path / "nope.parquet", tmp_path / "out")
    assert err.value.key == "source.params.path"
    assert not (tmp_path / "out").exists()


def test_a_job_refused_for_a_missing_column_leaves_no_output(inputs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ColumnNotFoundError) as err:
        run_with_overrides(
            [
                "source=parquet",
                f"source.params.path={inputs['parquet']}",
                "predictor.params.input_column=missing",
                f"sink.params.path={out}",
            ]
        )
    assert err.value.key == "predictor.params.input_column"
    assert "'missing' is not in the data; available columns: id, text" in str(err.value)
    assert not out.exists()
    assert not list(tmp_path.glob("out.__staging*"))


def test_an_error_raised_inside_a_worker_reaches_the_user_and_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="column 'text' has null values") as err:
        run_with_overrides(
            [
                "source=items",
                "source.params.items=[{text: fine},{text: null}]",
                f"sink.params.path={out}",
                "run.progress=false",
            ]
        )
    assert err.value.key == "predictor.params.input_column"
    assert not out.exists()
    assert not list(tmp_path.glob("out.__staging*"))


def test_a_parquet_write_task_unifies_its_blocks_into_one_file_schema(tmp_path):
    """A column that is all null in one block and text in the next still makes one valid file."""
    import ray.data

    from plugins.sinks.datasinks import ParquetFiles

    def label(batch):  # the first batch's labels are all null: an Arrow column of type null
        ids = batch["id"].to_pylist()
        labels = pa.nulls(len(ids)) if ids[0] == 0 else pa.array([f"row {i}" for i in ids])
        return batch.append_column("label", labels)

    ds = ray.data.range(4, override_num_blocks=1).map_batches(
        label, batch_size=2, batch_format="pyarrow"
    )
    ds.write_datasink(ParquetFiles(str(tmp_path / "out"), pyarrow.fs.LocalFileSystem()))
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 1
    table = pq.read_table(files[0])
    assert table.schema.field("label").type == pa.string()
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 0, "label": None},
        {"id": 1, "label": None},
        {"id": 2, "label": "row 2"},
        {"id": 3, "label": "row 3"},
    ]


def test_min_rows_per_file_makes_fewer_larger_parquet_files(tmp_path):
    import ray.data

    from plugins.sinks.datasinks import ParquetFiles

    ds = ray.data.range(12, override_num_blocks=4)
    ds.write_datasink(ParquetFiles(str(tmp_path / "few"), pyarrow.fs.LocalFileSystem(), 12))
    ds.write_datasink(ParquetFiles(str(tmp_path / "many"), pyarrow.fs.LocalFileSystem()))
    assert len(list((tmp_path / "few").iterdir())) == 1
    assert len(list((tmp_path / "many").iterdir())) == 4
    assert sorted(pq.read_table(tmp_path / "few")["id"].to_pylist()) == list(range(12))
