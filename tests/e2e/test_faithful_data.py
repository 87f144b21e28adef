"""Faithful data: values keep their types from source to sink, through real jobs on local Ray.

The round-trip table writes one table of hard values (digit strings with leading zeros, 19-digit
ids, int64 extremes, NaN and infinities, nulls, empty strings, unicode, text with line breaks,
quotes and delimiters, timestamps with a time zone, lists) in each file format, runs it through a
job to each file sink, and reads the output back with pyarrow: every value comes back equal, in
every column the formats on both sides can hold.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pytest
from kit import install_kit

from pipeline.contract.errors import DataError

UTC = dt.timezone.utc
HARD = pa.table(
    {
        "row": pa.array([0, 1, 2, 3, 4, 5], pa.int64()),
        "digits": ["00123", "07", "1234567890123456789", "", None, "0"],
        "big": pa.array([2**63 - 1, -(2**63), 0, 1, None, 42], pa.int64()),
        "x": [math.nan, math.inf, -math.inf, 1.5, None, -0.25],
        "text": ["héllo wörld ✓ 日本", "line one\nline two", 'say "hi"', "a,b;c\td", "", None],
        "ts": pa.array(
            [
                dt.datetime(2024, 1, 1, tzinfo=UTC),
                dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                None,
                dt.datetime(1970, 1, 1, tzinfo=UTC),
                dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
                dt.datetime(2000, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
            ],
            pa.timestamp("us", tz="UTC"),
        ),
        "flag": [True, False, None, True, False, True],
        "tags": pa.array([["a"], [], None, ["b", "c"], ["ü"], ["x,y"]], pa.list_(pa.string())),
    }
)
#: Columns a format cannot hold: CSV holds no lists.
NOT_IN = {"csv": {"tags"}, "json": set(), "parquet": set()}
#: What a source must be told: JSON has no timestamp type (ISO text stays text unless declared).
DECLARED = {"json": {"ts": "timestamp[us, tz=UTC]"}, "csv": {}, "parquet": {}}
FORMATS = ["parquet", "csv", "json"]


@pytest.fixture(scope="module", autouse=True)
def _kit():
    install_kit()  # before ray_session starts Ray, so its workers import the kit too


pytestmark = pytest.mark.usefixtures("ray_session")  # one local Ray for the module


def kit_stage(log_dir, **params) -> dict:
    """A ``kit_step`` preprocessor that logs worker starts and batch ids under ``log_dir``."""
    return {"type": "kit_step", "params": {"log_dir": str(log_dir), **params}}


def _json_value(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def write_input(table: pa.Table, fmt: str, folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"in.{'jsonl' if fmt == 'json' else fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pcsv.write_csv(table, path)
    else:
        rows = table.to_pylist()
        path.write_text(
            "".join(
                json.dumps({k: _json_value(v) for k, v in r.items()}, ensure_ascii=False) + "\n"
                for r in rows
            )
        )
    return str(path)


def read_output(folder, fmt: str, schema: pa.Schema) -> pa.Table:
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(("_", ".")))
    if fmt == "parquet":
        parts = [pq.read_table(f) for f in files]
    elif fmt == "csv":
        options = pcsv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        parse = pcsv.ParseOptions(newlines_in_values=True)
        parts = [pcsv.read_csv(f, parse_options=parse, convert_options=options) for f in files]
    else:
        parse = pjson.ParseOptions(explicit_schema=schema)
        parts = [pjson.read_json(f, parse_options=parse) for f in files]
    return pa.concat_tables(parts).sort_by("row")


def run_job(source: dict, sink: dict, preprocessors: list | None = None):
    from pipeline.execute.runner import run_job

    config = {
        "source": source,
        "preprocessors": preprocessors if preprocessors is not None else [],
        "sink": sink,
        "run": {"progress": False},
    }
    return run_job(config)


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("sink", FORMATS)
@pytest.mark.parametrize("source", FORMATS)
def test_hard_values_come_back_equal_through_every_file_source_and_sink(source, sink, tmp_path):
    dropped = NOT_IN[source] | NOT_IN[sink]
    table = HARD.drop_columns(sorted(dropped))
    path = write_input(table, source, tmp_path / "in")
    params = {"path": path}
    if DECLARED[source]:
        params["schema"] = DECLARED[source]
    # A pass-through stage between them: the guard checks its output against the plan's types.
    keep = [{"type": "select_columns", "params": {"columns": table.column_names}}]
    result = run_job(
        {"type": source, "params": params},
        {"type": sink, "params": {"path": str(tmp_path / "out")}},
        keep,
    )
    assert (result.rows_in, result.rows_out) == (table.num_rows, table.num_rows)
    back = read_output(tmp_path / "out", sink, table.schema)
    assert back.column_names == table.column_names
    for name in table.column_names:
        assert back.schema.field(name).type == table.schema.field(name).type, name
        want, got = table.column(name).to_pylist(), back.column(name).to_pylist()
        assert all(same(a, b) for a, b in zip(want, got, strict=True)), (name, want, got)


def test_json_strings_stay_strings_and_integers_stay_integers(tmp_path):
    rows = [
        {"id": "00123", "created_at": 1700000000, "code": "12345"},
        {"id": "07", "created_at": 1, "code": "2024-01-01T00:00:00Z"},
        {"id": "1234567890123456789", "created_at": 9223372036854775807, "code": "42"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_job(
        {"type": "json", "params": {"path": str(path)}},
        {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
    )
    out = pq.read_table(tmp_path / "out")
    assert out.schema.field("id").type == pa.string()
    assert out.schema.field("created_at").type == pa.int64()
    assert out.schema.field("code").type == pa.string()
    assert sorted(out.to_pylist(), key=lambda r: r["created_at"]) == sorted(
        rows, key=lambda r: r["created_at"]
    )


def test_a_json_column_of_mixed_types_is_refused_naming_file_and_column(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": "x2", "text": "b"}\n')
    with pytest.raises(DataError) as caught:
        run_job(
            {"type": "json", "params": {"path": str(path)}},
            {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        )
    assert caught.value.key == "source.params.path"
    assert str(path) in caught.value.message and "'id'" in caught.value.message
    assert "source.params.schema" in caught.value.message
    assert not (tmp_path / "out").exists()


def test_a_declared_type_reads_a_mixed_column_keeping_each_numbers_digits(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": 10000000000000000001}\n{"id": "x2"}\n{"id": 1.50}\n')
    run_job(
        {"type": "json", "params": {"path": str(path), "schema": {"id": "string"}}},
        {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
    )
    out = pq.read_table(tmp_path / "out")
    assert sorted(out.column("id").to_pylist()) == ["1.50", "10000000000000000001", "x2"]


def test_csv_keeps_leading_zeros_long_digit_strings_and_text_that_looks_like_null(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("zip,id,note,n\n00501,123456789012345678901,NA,1\n10001,5,null,2\n")
    run_job(
        {"type": "csv", "params": {"path": str(path)}},
        {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
    )
    out = pq.read_table(tmp_path / "out").sort_by("n")
    assert out.column("zip").to_pylist() == ["00501", "10001"]
    assert out.column("id").to_pylist() == ["123456789012345678901", "5"]
    assert out.column("note").to_pylist() == ["NA", "null"]
    assert out.schema.field("n").type == pa.int64()


def test_a_csv_value_that_does_not_fit_its_column_names_the_column(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("id,score\n1,0.5\n")
    (folder / "b.csv").write_text("id,score\n2,high\n")  # score was inferred float64 from a.csv
    with pytest.raises(DataError) as caught:
        run_job(
            {"type": "csv", "params": {"path": str(folder)}},
            {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        )
    message = caught.value.message
    assert str(folder / "b.csv") in message and "column 'score'" in message, message
    assert "source.params.schema={score: string}" in message


def test_csv_text_with_line_breaks_round_trips_through_the_csv_sink(tmp_path):
    """20,000 rows of generated-text-like values: every row is counted and read back."""
    n = 20_000
    texts = [f'row {i}: "quoted", comma, and\na line break\r\nand more' for i in range(n)]
    table = pa.table({"id": list(range(n)), "text": texts})
    path = tmp_path / "in.parquet"
    pq.write_table(table, path)
    result = run_job(
        {"type": "parquet", "params": {"path": str(path)}},
        {"type": "csv", "params": {"path": str(tmp_path / "out")}},
    )
    assert result.rows_out == n and result.manifest["rows_out"] == n
    assert sum(f["rows"] for f in result.manifest["files"]) == n
    files = [f for f in (tmp_path / "out").iterdir() if f.suffix == ".csv"]
    parse = pcsv.ParseOptions(newlines_in_values=True)
    back = pa.concat_tables([pcsv.read_csv(f, parse_options=parse) for f in files])
    assert sorted(back.column("text").to_pylist()) == sorted(texts)


def test_an_items_column_of_mixed_types_is_refused_before_any_work(tmp_path):
    with pytest.raises(DataError, match="items do not fit one table"):
        run_job(
            {"type": "items", "params": {"items": [{"a": 1}, {"a": "x"}]}},
            {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        )


# -- empty input ---------------------------------------------------------------------------------


def _empty_inputs(d):
    """name -> (source config, path) for inputs without a row, one per format."""
    zero = d / "zero"
    zero.mkdir()
    pq.write_table(
        pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}),
        zero / "part-0.parquet",
    )
    header = d / "header.csv"
    header.write_text("id,text\n")
    blank = d / "blank.jsonl"
    blank.write_text("\n\n")
    folder = d / "nothing"
    folder.mkdir()
    return {
        "zero-row parquet": ("parquet", zero),
        "header-only csv": ("csv", header),
        "blank json lines": ("json", blank),
        "empty folder": ("json", folder),
    }


@pytest.mark.parametrize(
    "name", ["zero-row parquet", "header-only csv", "blank json lines", "empty folder"]
)
def test_a_source_without_rows_is_an_error_naming_the_path(name, tmp_path):
    from pipeline.contract.errors import EmptyInputError

    fmt, path = _empty_inputs(tmp_path)[name]
    with pytest.raises(EmptyInputError) as caught:
        run_job(
            {"type": fmt, "params": {"path": str(path)}},
            {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        )
    assert caught.value.key == "source.params.path"
    assert f"the source produced no rows from {path}" in caught.value.message
    assert "run.allow_empty=true" in caught.value.message
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.*"))  # no staging folder either


def test_allow_empty_publishes_an_empty_output_with_its_manifest(tmp_path):
    from pipeline.execute.runner import run_job

    _, path = _empty_inputs(tmp_path)["zero-row parquet"]
    config = {
        "source": {"type": "parquet", "params": {"path": str(path)}},
        "sink": {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        "run": {"progress": False, "allow_empty": True},
    }
    result = run_job(config)
    assert (result.rows_in, result.rows_out) == (0, 0)
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert (manifest["rows_in"], manifest["rows_out"], manifest["files"]) == (0, 0, [])


# -- what a sink can hold, checked before any worker starts --------------------------------------


def test_a_list_column_sent_to_csv_is_refused_before_any_worker_starts(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2], "vec": [[0.5, 1.0], [2.0, 3.0]]}), path)
    with pytest.raises(DataError) as caught:
        run_job(
            {"type": "parquet", "params": {"path": str(path)}},
            {"type": "csv", "params": {"path": str(tmp_path / "out")}},
            [kit_stage(tmp_path / "log")],
        )
    assert caught.value.key == "sink"
    message = caught.value.message
    assert "column 'vec' is list<float64>" in message and "sink 'csv'" in message
    assert "sink=parquet" in message and "sink.params.columns=[id, out]" in message
    assert not list((tmp_path / "log").glob("init-*")), "no stage worker may start"
    assert not (tmp_path / "out").exists()


# -- remote inputs that cannot be reached ---------------------------------------------------------


@pytest.fixture
def fake_s3_credentials(monkeypatch):
    """Credentials in the environment, and no instance-metadata lookup: S3 goes nowhere but
    the loopback endpoint each test names."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_remote_input_is_one_clear_error_within_seconds(
    fake_s3_credentials, tmp_path
):
    import time

    uri = f"s3://bucket/in.jsonl?endpoint_override=127.0.0.1:{_closed_port()}&scheme=http"
    started = time.monotonic()
    with pytest.raises(DataError) as caught:
        run_job(
            {"type": "json", "params": {"path": uri}},
            {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
        )
    assert time.monotonic() - started < 60
    assert caught.value.key == "source.params.path"
    assert caught.value.message.startswith(f"cannot read {uri}: ")
    assert "connect" in caught.value.message.lower()


def test_a_forbidden_remote_input_names_the_uri_and_the_cause(fake_s3_credentials, tmp_path):
    import http.server
    import threading

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def _deny(self):
            body = (
                b'<?xml version="1.0"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>"
            )
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _deny

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        uri = f"s3://bucket/in.jsonl?endpoint_override=127.0.0.1:{port}&scheme=http"
        with pytest.raises(DataError) as caught:
            run_job(
                {"type": "json", "params": {"path": uri}},
                {"type": "parquet", "params": {"path": str(tmp_path / "out")}},
            )
    finally:
        server.shutdown()
    assert caught.value.key == "source.params.path"
    assert uri in caught.value.message
    assert "ACCESS_DENIED" in caught.value.message or "403" in caught.value.message


# -- nothing after the work loses the work --------------------------------------------------------


def test_a_failure_while_publishing_keeps_the_work_and_resume_publishes_without_rerunning(
    tmp_path,
):
    """The output appears while the job runs (another job wrote it): publishing fails, the
    finished units stay staged, and the resumed run publishes them without running a batch."""
    import threading

    from pipeline.output.staging import STAGING_SUFFIX

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(8)), "text": [f"t{i}" for i in range(8)]}), path)
    out, log = tmp_path / "out", tmp_path / "log"
    stage = kit_stage(log, sleep_s=1.0)
    job = (
        {"type": "parquet", "params": {"path": str(path)}},
        {"type": "parquet", "params": {"path": str(out)}},
        [stage],
    )
    threading.Timer(1.0, lambda: (out.mkdir(), (out / "other.txt").write_text("x"))).start()
    with pytest.raises(DataError, match="output appeared while the job ran") as caught:
        run_job(*job)
    assert "run.resume=true" in caught.value.message
    staging = tmp_path / f"out{STAGING_SUFFIX}"
    assert staging.exists()
    batches = sum(len(p.read_text().split()) for p in log.glob("ids-*.txt"))
    (out / "other.txt").unlink()
    out.rmdir()

    from pipeline.execute.runner import run_job as run_config

    config = {
        "source": job[0],
        "preprocessors": [stage],
        "sink": job[1],
        "run": {"progress": False, "resume": True},
    }
    result = run_config(config)
    assert result.rows_out == 8 and (result.rows_resumed, result.rows_done) == (8, 0)
    assert sum(len(p.read_text().split()) for p in log.glob("ids-*.txt")) == batches
    assert sorted(pq.read_table(out).column("id").to_pylist()) == list(range(8))
    assert not staging.exists()
