"""Every staged sink keeps the same promises on its real engine (:class:`contracts.SinkContract`):
Lance (and LanceDB) embedded, Iceberg through pyiceberg's SQL catalog on SQLite with a local
warehouse, SQLite and PostgreSQL through SQLAlchemy (PostgreSQL skips, saying why, when no server
can be started here), and the Parquet file sink."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contracts import SinkContract

pytestmark = pytest.mark.subprocess  # the kill tests run the command line

PG_PASSWORD_ENV = "BULKINFER_TEST_PG_PASSWORD"
ICEBERG_SECRET_ENV = "BULKINFER_TEST_ICEBERG_CREDENTIAL"
ICEBERG_SECRET = "iceberg-credential-5e1f9c"
_databases = itertools.count()


class TestLanceSink(SinkContract):
    sink = "lance"
    # The table kind killed at every point (the others: half way and before the commit).
    kill_points = ("written", "half-way", "publishing", "committed")

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

    def params(self, where: Path) -> dict[str, Any]:
        return {"url": f"sqlite:///{where}/out.db", "table": "items"}

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        return read_sql(params)


class TestPostgresSink(SinkContract):
    sink = "sql"
    mode_replace = "replace"
    error_key = "sink.params.table"
    # The SQL sink's kill test runs on SQLite (the same job store and publish code); here the
    # command line is checked for the password instead (a cheaper run than kill and resume).
    test_a_driver_killed_at_each_point_resumes_without_duplicates_or_redone_rows = None

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

    def test_the_password_never_reaches_any_output(self, tmp_path):
        from conftest import run_cli
        from contracts import sink_overrides

        params = self.params(tmp_path)
        args = ["source=items", "~predictor", *sink_overrides("sql", params)]
        args += ["run.progress=false", "ray.num_cpus=2"]
        done = run_cli(*args, f"hydra.run.dir={tmp_path / 'first'}", timeout=300)
        assert done.returncode == 0, done.stderr
        assert [r["data"] for r in self.rows_by("data", params)] == ["Complete this", "for me"]
        again = run_cli(*args, f"hydra.run.dir={tmp_path / 'second'}", timeout=300)
        assert again.returncode == 2 and "table already exists" in again.stderr
        seen = [done.stdout, done.stderr, again.stdout, again.stderr]
        seen += [p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".db"]
        assert self.server.password not in "\n".join(seen)
        assert "postgresql+psycopg://bulkinfer@" in done.stdout  # the URL, without a password

    def rows_by(self, column: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        table = self.read(params)
        return sorted(table.to_pylist(), key=lambda r: r[column]) if table is not None else []


class TestParquetSink(SinkContract):
    sink = "parquet"
    # test_resume.py kills a Parquet job half way (and checks the refusals without resume).
    kill_points = ("written", "renaming", "publishing")

    def params(self, where: Path) -> dict[str, Any]:
        return {"path": str(where / "out")}

    def read(self, params: dict[str, Any]) -> pa.Table | None:
        path = Path(params["path"])
        return pq.read_table(path) if path.exists() else None

    def written(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        import pyarrow.fs

        from pipeline.contract.sink import FileOutput
        from pipeline.output.staging import Staging

        out = FileOutput(pyarrow.fs.LocalFileSystem(), params["path"], params["path"])
        return list(Staging(out).committed().values())
