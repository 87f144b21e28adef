"""Every staged sink keeps the same promises on its real engine (:class:`contracts.SinkContract`):
Lance (and LanceDB) embedded, Iceberg through pyiceberg's SQL catalog on SQLite with a local
warehouse, SQLite and PostgreSQL through SQLAlchemy (PostgreSQL skips, saying why, when no server
can be started here), and the Parquet, CSV and JSON file sinks (CSV and JSON: the kill test
only). Every kind is killed before its first write record, half way and while publishing (the
file sinks between them) and stopped once with Ctrl-C (JSON: SIGTERM), each run resuming the
last."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from contracts import SinkContract

pytestmark = pytest.mark.subprocess  # the kill tests run the command line

PG_PASSWORD_ENV = "BULKINFER_TEST_PG_PASSWORD"
ICEBERG_SECRET_ENV = "BULKINFER_TEST_ICEBERG_CREDENTIAL"
ICEBERG_SECRET = "iceberg-credential-5e1f9c"
_databases = itertools.count()


class TestLanceSink(SinkContract):
    sink = "lance"
    # Its Ctrl-C comes after the commit of a resumed publish (its record not yet dropped).
    kill_points = ("written", "recorded", "publishing", "ctrl-c:committed")

    def params(self, where: Path) -> dict[str, Any]:
        return {"path": str(where / "db" / "items.lance")}

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        import lance

        try:
            return lance.dataset(params["path"]).to_table()
        except ValueError:
            return None

    def test_an_embedding_job_is_indexed_and_each_row_found_by_its_own_vector(
        self, ray_session, tmp_path
    ):
        import lance
        import lancedb

        from pipeline.execute.runner import run_job

        topics = ["cats", "stock markets", "rain", "football", "bread", "volcanoes", "jazz"]
        rows = [{"id": i, "text": f"A note about {topics[i % 7]}, number {i}."} for i in range(40)]
        params = {
            **self.params(tmp_path),
            "vector_index": {"column": "embedding", "index_type": "IVF_FLAT", "metric": "cosine"},
        }
        result = run_job(
            {
                "source": {"type": "items", "params": {"items": rows}},
                "predictor": {"type": "sentence_embedding", "params": {"normalize": True}},
                "sink": {"type": "lance", "params": params},
                "run": {"progress": False},
            }
        )
        assert result.rows_out == 40
        assert result.published["index"] == "embedding_idx"
        ds = lance.dataset(params["path"])
        assert ds.count_rows() == 40 and ds.version == result.published["version"] + 1
        assert ds.schema.field("embedding").type == pa.list_(pa.float32(), 384)
        table = lancedb.connect(str(tmp_path / "db")).open_table("items")
        stored = {r["id"]: r for r in table.to_arrow().to_pylist()}
        assert sorted(stored) == list(range(40))
        for i in (3, 26):
            assert stored[i]["text"] == rows[i]["text"]
            hits = table.search(stored[i]["embedding"]).metric("cosine").limit(1).to_list()
            assert hits[0]["id"] == i


class TestIcebergSink(SinkContract):
    sink = "iceberg"
    mode_error = None  # append (default) or overwrite
    error_key = "sink.params.table"
    secret = ICEBERG_SECRET
    kill_points = ("written", "recorded", "ctrl-c:recorded", "publishing")

    @pytest.fixture(autouse=True)
    def _credential(self, monkeypatch):
        monkeypatch.setenv(ICEBERG_SECRET_ENV, ICEBERG_SECRET)

    def params(self, where: Path) -> dict[str, Any]:
        return {
            "catalog": {
                "type": "sql",
                "uri": f"sqlite:///{where}/catalog.db",
                "warehouse": f"file://{where}/warehouse",
            },
            "catalog_env": {"credential": ICEBERG_SECRET_ENV},  # unused by a SQL catalog
            "table": "ns.items",
        }

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        from plugins.sinks.targets.iceberg_target import IcebergParams, IcebergTarget

        table = IcebergTarget(IcebergParams(**params)).load()
        return None if table is None else table.scan().to_arrow()


def read_sql(params: dict[str, Any]) -> pa.Table | None:
    import sqlalchemy as sa

    from plugins.sinks.targets.sql_target import SqlParams, SqlTarget, missing_sqlite_file

    if missing_sqlite_file(params["url"]):
        return None
    engine = SqlTarget(SqlParams(**params)).engine()
    try:
        if not sa.inspect(engine).has_table(params["table"]):
            return None
        with engine.connect() as connection:
            table = sa.Table(params["table"], sa.MetaData(), autoload_with=connection)
            rows = [dict(r._mapping) for r in connection.execute(sa.select(table))]
    finally:
        engine.dispose()
    return pa.Table.from_pylist(rows) if rows else pa.table({"id": pa.array([], pa.int64())})


class TestSqliteSink(SinkContract):
    sink = "sql"
    mode_replace = "replace"
    error_key = "sink.params.table"
    keeps_its_last_job = False  # its job record goes with the commit; nothing names the job
    # Killed inside its publish's transaction (rows inserted, not committed): SQLite rolls it
    # back from its journal when the resumed run opens the database, which publishes again.
    kill_points = ("written", "recorded", "ctrl-c:recorded", "committing")

    def params(self, where: Path) -> dict[str, Any]:
        return {"url": f"sqlite:///{where}/out.db", "table": "items"}

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        return read_sql(params)


class TestPostgresSink(SinkContract):
    sink = "sql"
    mode_replace = "replace"
    error_key = "sink.params.table"
    keeps_its_last_job = False
    # SQLite's job, on the same SQL target code, is also killed before its first record and
    # stopped with Ctrl-C; here the server drops the killed transaction's connection.
    kill_points = ("recorded", "committing")
    # The refusal prints the job store's place, the database's URL: never with the password.
    refusals = ("plain",)
    shows = "postgresql+psycopg://bulkinfer@"  # the URL the finished run names, unmasked

    @pytest.fixture(autouse=True)
    def _server(self, postgres, monkeypatch):
        monkeypatch.setenv(PG_PASSWORD_ENV, postgres.password)
        self.server = postgres
        self.secret = postgres.password

    def params(self, where: Path) -> dict[str, Any]:
        import sqlalchemy as sa

        name = f"contract_{next(_databases)}"
        admin = sa.create_engine(
            self.server.url().replace("://bulkinfer@", f"://bulkinfer:{self.server.password}@"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        return {
            "url": self.server.url(database=name),
            "password_env": PG_PASSWORD_ENV,
            "table": "items",
        }

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        return read_sql(params)


class FileSinkContract(SinkContract):
    """A file sink: a folder of files staged in ``<path>.__bulkinfer_staging``."""

    #: The format pyarrow.dataset reads the folder with.
    format = "parquet"

    def params(self, where: Path) -> dict[str, Any]:
        return {"path": str(where / "out")}

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        import pyarrow.dataset as ds

        path = Path(params["path"])  # _SUCCESS and _errors/ are left out (prefix "_")
        return ds.dataset(path, format=self.format).to_table() if path.exists() else None

    def job_store(self, params: dict[str, Any]) -> Any:
        import pyarrow.fs

        from pipeline.contract.sink import FileOutput
        from pipeline.output.staging import Staging

        return Staging(FileOutput(pyarrow.fs.LocalFileSystem(), params["path"], params["path"]))

    def job_left(self, params: dict[str, Any]) -> bool:
        """Whether anything of a job is left: its staging folder, with or without a record."""
        from pipeline.output.staging import STAGING_SUFFIX

        return Path(params["path"] + STAGING_SUFFIX).exists()

    def check_published(self, params: dict[str, Any], rows: int) -> None:
        from pipeline.output.staging import MANIFEST, STAGING_SUFFIX

        manifest = json.loads((Path(params["path"]) / MANIFEST).read_text())
        assert (manifest["rows_in"], manifest["rows_out"]) == (rows, rows)
        assert not Path(params["path"] + STAGING_SUFFIX).exists(), "the staging folder is gone"


class TestParquetSink(FileSinkContract):
    sink = "parquet"
    # The three file sinks share their staging, records and publish (FileSink) and differ in
    # the file writer: between them they are killed at every point of a file output (CSV
    # before its first record, JSON half way and mid-rename, Parquet while publishing), and
    # each is stopped by a signal: Ctrl-C (CSV once; Parquet before its first record, where
    # nothing is kept, then twice) or SIGTERM to the job's process group (JSON, as a
    # scheduler stops a job). Parquet's job also checks the refusals of a run without
    # run.resume and of one with a changed config.
    kill_points = ("ctrl-c:written", "ctrl-c-twice:recorded", "publishing")
    refusals = ("plain", "changed")
    # tests/e2e/test_failures.py runs the Parquet sink's modes (and checks their manifests).
    test_the_modes_replace_refuse_and_add_to_a_target = None


class _OnlyKilled:
    """CSV and JSON write through the Parquet sink's code (FileSink: staging, records,
    publish, modes) with their own file writer: only the kill test runs for them."""

    test_an_xgboost_job_writes_rows_that_read_back_equal = None
    test_the_modes_replace_refuse_and_add_to_a_target = None
    test_a_job_failing_on_its_second_unit_leaves_the_target_as_it_was = None


class TestCsvSink(_OnlyKilled, FileSinkContract):
    sink = "csv"
    format = "csv"
    kill_points = ("written", "ctrl-c:recorded")
    one_file = True  # one long input: stopped and resumed mid-file (the others: many units)


class TestJsonSink(_OnlyKilled, FileSinkContract):
    sink = "json"
    format = "json"
    kill_points = ("recorded", "sigterm:recorded", "renaming")
