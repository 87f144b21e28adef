"""A table in any database SQLAlchemy reaches, as a staged target: one transaction publishes.

Write tasks insert their rows in batches into a staging table beside the target,
``<table>__bulkinfer_stage``, each row tagged with its unit and its *part* (one random token per
write-task attempt). The receipt lists the unit's parts. :meth:`SqlTarget.publish` runs one
transaction: record the receipted parts (``<table>__bulkinfer_parts``), create, replace or keep
the target per ``mode``, move the receipted parts' rows into it (an ``INSERT ... SELECT``, or an
upsert on ``key_columns``), drop both staging tables and the job's record. Rows of a write task
that Ray retried carry a part no receipt names and are never moved. A repeated publish finds no
staging table (the transaction that dropped it is the one that published) and does nothing.

The job record and the unit markers live in the database too (:mod:`.sql_store`:
``<table>__bulkinfer_job`` and ``<table>__bulkinfer_units``), so the publishing transaction
drops them with the staging tables: the rows are published and the job is over at once.
Checks (dry runs too) never create a SQLite file that does not exist.

Atomic where the database has transactional DDL (PostgreSQL, SQLite, SQL Server); on MySQL or
Oracle a ``CREATE``/``DROP`` commits on its own, so ``replace`` and creating the table are not
atomic there. SQLite runs with SQLAlchemy's recipe for real transactions (``BEGIN`` emitted by
SQLAlchemy, so DDL is transactional) and a 60 s busy timeout.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa

from pipeline.contract.errors import ConfigError, DataError
from pipeline.contract.halts import halt
from plugins.sinks.targets.env import Secrets, read_env
from plugins.sinks.targets.protocol import (
    UnitWriter,
    WriterTarget,
    conform,
    resolve_types,
    schema_from_text,
    schema_to_text,
)
from plugins.sinks.targets.sql_params import KEY, SqlParams
from plugins.sinks.targets.sql_types import (
    insert_many,
    refuse_lost_floats,
    sql_columns,
    sql_fits,
    sql_values,
)

if TYPE_CHECKING:
    from plugins.sinks.targets.sql_store import SqlJobStore

UNIT_COLUMN = "_bulkinfer_unit"
PART_COLUMN = "_bulkinfer_part"
UPSERT_DIALECTS = ("sqlite", "postgresql")
MAX_NAME = 63  # PostgreSQL's identifier limit, the smallest of the common databases


def _name(base: str, suffix: str) -> str:
    """``base + suffix``, shortened with a hash to fit every database's identifier limit."""
    name = base + suffix
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:10]
    return f"{base[: MAX_NAME - len(suffix) - 11]}_{digest}{suffix}"


CONNECT_TIMEOUT = {"connect_timeout": 10}  # seconds (libpq's connect_timeout)


def missing_sqlite_file(url: str) -> bool:
    """A SQLite database file that does not exist yet (connecting would create it)."""
    parsed = sa.engine.make_url(url)
    database = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not os.path.exists(database)
    )


def password(params: SqlParams) -> Secrets:
    """The password ``password_env`` names (read on the driver), or none."""
    if not params.password_env:
        return Secrets({})
    return Secrets({"password": read_env(params.password_env, key=f"{KEY}.password_env")})


def _engine(params: SqlParams, secret: Secrets | None = None) -> sa.Engine:
    """A SQLAlchemy engine for ``params.url`` (no pool). Raises :class:`ConfigError`
    (``sink.params.url``) when the URL's database driver is not installed."""
    try:
        return _create_engine(params, secret)
    except ModuleNotFoundError as exc:
        url = sa.engine.make_url(params.url)
        how = (
            "pip install 'bulkinfer[sql]'"
            if exc.name == "psycopg"
            else "install the package that provides it, or name another driver in the URL"
        )
        raise ConfigError(
            f"{url.drivername} needs the module {exc.name}, which is not installed: {how}",
            key=f"{KEY}.url",
        ) from None


def _create_engine(params: SqlParams, secret: Secrets | None = None) -> sa.Engine:
    url = sa.engine.make_url(params.url)
    given = (secret or password(params)).values()
    if given:
        url = url.set(password=given["password"])
    if url.get_dialect().name == "postgresql":  # an unreachable host fails in seconds, not minutes
        return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=CONNECT_TIMEOUT)
    if url.get_dialect().name != "sqlite":
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, so DDL is transactional

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # every transaction here writes

    return engine


class SqlUnitWriter(UnitWriter):
    """Inserts one write task's rows into the staging table, in batches (in a Ray task)."""

    def __init__(self, params: SqlParams, schema: pa.Schema, unit: str, secret: Secrets) -> None:
        self.params, self.schema, self.unit, self.secret = params, schema, unit, secret

    def write(self, tables: Iterable[pa.Table]) -> list[dict[str, Any]]:
        stage, _ = SqlTarget(self.params).stage_tables(self.schema)
        part, rows = uuid.uuid4().hex, 0
        tag = {UNIT_COLUMN: self.unit, PART_COLUMN: part}
        engine = _engine(self.params, self.secret)
        dialect = engine.dialect.name
        try:
            for table in tables:
                table = conform(table, self.schema)
                table = refuse_lost_floats(
                    table, self.params.json_columns, dialect, self.params.nan_as_null
                )
                for start in range(0, table.num_rows, self.params.batch_rows):
                    batch = table.slice(start, self.params.batch_rows)
                    values, stored = sql_values(batch, self.params.json_columns, dialect)
                    values.update({k: [v] * batch.num_rows for k, v in tag.items()})
                    with engine.begin() as connection:
                        insert_many(connection, stage, values, stored)
                    rows += batch.num_rows
        finally:
            engine.dispose()
        return [{"rows": rows, "part": part}] if rows else []


class SqlTarget(WriterTarget):
    """``sink=sql``: see the module docstring."""

    key = f"{KEY}.table"

    def __init__(self, params: SqlParams) -> None:
        self.params = params
        self.dialect = sa.engine.make_url(params.url).get_dialect().name
        db_schema, _, name = params.table.rpartition(".")
        self.db_schema, self.name = db_schema or None, name
        self.stage_name = _name(name, "__bulkinfer_stage")
        self.parts_name = _name(name, "__bulkinfer_parts")
        self.job_name = _name(name, "__bulkinfer_job")
        self.units_name = _name(name, "__bulkinfer_units")
        self.shown_url = sa.engine.make_url(params.url).render_as_string(hide_password=True)
        self.location = f"{self.shown_url} table {params.table}"

    def job_store(self) -> SqlJobStore:
        from plugins.sinks.targets.sql_store import SqlJobStore

        return SqlJobStore(self)

    # -- helpers --
    def engine(self) -> sa.Engine:
        return _engine(self.params)

    def columns(self, schema: pa.Schema) -> list[sa.Column]:
        schema = resolve_types(schema, self.params.column_types, "SQL")
        return sql_columns(schema, self.dialect, self.params.json_columns, key="sink")

    def _target_table(self, schema: pa.Schema) -> sa.Table:
        keys = set(self.params.key_columns)
        columns = [
            sa.Column(c.name, c.type, primary_key=c.name in keys, nullable=c.name not in keys)
            for c in self.columns(schema)
        ]
        return sa.Table(self.name, sa.MetaData(), *columns, schema=self.db_schema)

    def stage_tables(self, schema: pa.Schema) -> tuple[sa.Table, sa.Table]:
        metadata = sa.MetaData()
        stage = sa.Table(
            self.stage_name,
            metadata,
            *self.columns(schema),
            sa.Column(UNIT_COLUMN, sa.String(200), nullable=False),
            sa.Column(PART_COLUMN, sa.String(32), nullable=False, index=True),
            schema=self.db_schema,
        )
        parts = sa.Table(
            self.parts_name,
            metadata,
            sa.Column(PART_COLUMN, sa.String(32), primary_key=True),
            sa.Column(UNIT_COLUMN, sa.String(200), nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False),
            schema=self.db_schema,
        )
        return stage, parts

    def _failure(self, action: str, exc: sa.exc.SQLAlchemyError) -> DataError:
        """A database error as a DataError without the statement's parameters (row values)."""
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return DataError(f"{action} {self.location} failed: {reason}", key=f"{KEY}.table")

    # -- the steps --
    def check(self, schema: pa.Schema, resuming: bool = False) -> None:
        """Types first (no connection needed), then what the database holds."""
        named = [c for c in schema.names if c.startswith("_bulkinfer_")]
        if named:
            raise DataError(
                f"column {named[0]!r}: names starting with _bulkinfer_ are reserved by this "
                "sink; rename it",
                key="sink",
            )
        for key, names in (
            ("key_columns", self.params.key_columns),
            ("json_columns", self.params.json_columns),
        ):
            missing = [n for n in names if n not in schema.names]
            if missing:
                raise ConfigError(
                    f"{', '.join(missing)} not in the output; its columns: "
                    f"{', '.join(schema.names)}",
                    key=f"{KEY}.{key}",
                )
        if self.params.key_columns and self.dialect not in UPSERT_DIALECTS:
            raise ConfigError(
                f"upserts (key_columns) are supported on {' and '.join(UPSERT_DIALECTS)}, "
                f"not {self.dialect}",
                key=f"{KEY}.key_columns",
            )
        self.columns(schema)
        if resuming or missing_sqlite_file(self.params.url):
            return  # resuming: the interrupted run checked, and its publish checks again
        engine = self.engine()
        try:
            inspector = sa.inspect(engine)
            self._check_schema(inspector)
            if not inspector.has_table(self.name, schema=self.db_schema):
                return
            if self.params.mode == "error":
                raise DataError(
                    f"table already exists: {self.location}. Choose another table, or set "
                    "sink.params.mode=append (add this run's rows) or replace (replace the "
                    "table when the job succeeds).",
                    key=f"{KEY}.table",
                )
            if self.params.mode == "append":
                self._check_append(inspector, schema)
        except sa.exc.OperationalError as exc:
            raise self._failure("connecting to", exc) from None
        finally:
            engine.dispose()

    def _check_schema(self, inspector: Any) -> None:
        """Refuse a ``schema.table`` whose schema the database does not have."""
        if self.db_schema is None or self.db_schema in inspector.get_schema_names():
            return
        raise DataError(
            f"schema {self.db_schema!r} does not exist in {self.shown_url}: create it first "
            f"(CREATE SCHEMA {self.db_schema}), or name a table in a schema that exists",
            key=f"{KEY}.table",
        )

    def _check_append(self, inspector: Any, schema: pa.Schema) -> None:
        """Refuse an append the table cannot take unchanged: output columns it lacks, columns
        whose values it would change or refuse (:func:`sql_fits`), and required columns the
        output lacks; then, with ``key_columns``, a table without that unique key."""
        existing = {c["name"]: c for c in inspector.get_columns(self.name, schema=self.db_schema)}
        problems = []
        lacking = [n for n in schema.names if n not in existing]
        if lacking:
            problems.append(f"it has no column {', '.join(lacking)}")
        planned = {c.name: c.type for c in self.columns(schema)}
        for name, kind in planned.items():
            if name in existing:
                why = sql_fits(kind, existing[name]["type"], self.dialect)
                if why:
                    problems.append(f"{name!r} {why}")
        pk = inspector.get_pk_constraint(self.name, schema=self.db_schema)["constrained_columns"]
        required = [
            name
            for name, column in existing.items()
            if name not in planned
            and not column.get("nullable", True)
            and column.get("default") is None
            and not (pk == [name] and column.get("autoincrement") in (True, "auto"))
        ]
        if required:
            problems.append(f"the output lacks {', '.join(required)}, which are NOT NULL there")
        if problems:
            raise DataError(
                f"cannot append to {self.location}: {'; '.join(problems)}. Give the columns the "
                "table's names and types (cast with sink.params.column_types), set "
                "sink.params.mode=replace, or choose another table.",
                key=f"{KEY}.mode",
            )
        keys = set(self.params.key_columns)
        if not keys:
            return
        pk = set(
            inspector.get_pk_constraint(self.name, schema=self.db_schema)["constrained_columns"]
        )
        uniques = [
            set(u["column_names"])
            for u in inspector.get_unique_constraints(self.name, schema=self.db_schema)
        ] + [
            set(i["column_names"])
            for i in inspector.get_indexes(self.name, schema=self.db_schema)
            if i.get("unique")
        ]
        if keys != pk and keys not in uniques:
            raise DataError(
                f"cannot upsert into {self.location} on {', '.join(sorted(keys))}: no primary "
                "key or unique constraint on exactly these columns",
                key=f"{KEY}.key_columns",
            )

    def begin(self, run_id: str, schema: pa.Schema) -> dict[str, Any]:
        """Create empty staging tables (dropping a previous run's leftovers)."""
        schema = resolve_types(schema, self.params.column_types, "SQL")
        stage, parts = self.stage_tables(schema)
        engine = self.engine()
        try:
            with engine.begin() as connection:
                parts.drop(connection, checkfirst=True)
                stage.drop(connection, checkfirst=True)
                stage.metadata.create_all(connection)
        finally:
            engine.dispose()
        return {"run_id": run_id, "schema": schema_to_text(schema)}

    def writer(self, state: dict[str, Any], unit_id: str) -> SqlUnitWriter:
        schema = schema_from_text(state["schema"])
        return SqlUnitWriter(self.params, schema, unit_id, password(self.params))

    def publish(self, state: dict[str, Any], receipts: list[dict[str, Any]]) -> dict[str, Any]:
        schema = schema_from_text(state["schema"])
        rows = sum(r["rows"] for r in receipts)
        engine = self.engine()
        try:
            with engine.begin() as connection:
                inspector = sa.inspect(connection)
                if not inspector.has_table(self.stage_name, schema=self.db_schema):
                    return {"rows": rows, "already": True}
                self._publish(connection, inspector, schema, receipts)
                halt("committing")  # test-only: the transaction open, its rows inserted
        except sa.exc.SQLAlchemyError as exc:
            raise self._failure("publishing into", exc) from None
        finally:
            engine.dispose()
        return {"rows": rows, "already": False}

    def _publish(
        self, connection: Any, inspector: Any, schema: pa.Schema, receipts: list[dict[str, Any]]
    ) -> None:
        stage, parts = self.stage_tables(schema)
        records = [
            {PART_COLUMN: p["part"], UNIT_COLUMN: r["unit"], "rows": p["rows"]}
            for r in receipts
            for p in r["parts"]
        ]
        if records:
            connection.execute(parts.insert(), records)
        names = schema.names
        chosen = sa.select(*(stage.c[n] for n in names)).where(
            stage.c[PART_COLUMN].in_(sa.select(parts.c[PART_COLUMN]))
        )
        keys = self.params.key_columns
        if keys:
            self._refuse_duplicate_keys(connection, chosen.subquery(), keys)
        exists = inspector.has_table(self.name, schema=self.db_schema)
        if exists and self.params.mode == "error":
            raise DataError(
                f"table {self.location} appeared while the job ran; the finished work is kept: "
                "move that table away and rerun with run.resume=true",
                key=f"{KEY}.table",
            )
        if exists and self.params.mode == "replace":
            target = sa.Table(
                self.name, sa.MetaData(), schema=self.db_schema, autoload_with=connection
            )
            target.drop(connection)
            exists = False
        if exists:
            target = sa.Table(
                self.name, sa.MetaData(), schema=self.db_schema, autoload_with=connection
            )
        else:
            target = self._target_table(schema)
            target.create(connection)
        if keys:
            insert = self._upsert(target, names, chosen, keys)
        else:
            insert = target.insert().from_select(names, chosen)
        connection.execute(insert)
        parts.drop(connection)
        stage.drop(connection)
        from plugins.sinks.targets.sql_store import drop_record

        drop_record(self, connection)  # the job is over in the same transaction

    def _refuse_duplicate_keys(self, connection: Any, chosen: Any, keys: list[str]) -> None:
        query = (
            sa.select(*(chosen.c[k] for k in keys), sa.func.count().label("n"))
            .group_by(*(chosen.c[k] for k in keys))
            .having(sa.func.count() > 1)
            .limit(3)
        )
        duplicates = connection.execute(query).all()
        if duplicates:
            shown = "; ".join(
                ", ".join(f"{k}={v!r}" for k, v in zip(keys, row[:-1], strict=True))
                + f" ({row[-1]} rows)"
                for row in duplicates
            )
            raise DataError(
                f"the output has several rows per key ({shown}), so the upsert into "
                f"{self.location} would be ambiguous",
                key=f"{KEY}.key_columns",
            )

    def _upsert(self, target: sa.Table, names: list[str], chosen: Any, keys: list[str]) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(target).from_select(names, chosen)
        others = [n for n in names if n not in keys]
        if not others:
            return statement.on_conflict_do_nothing(index_elements=keys)
        return statement.on_conflict_do_update(
            index_elements=keys, set_={n: statement.excluded[n] for n in others}
        )

    def discard(
        self, state: dict[str, Any], unit_ids: list[str], receipts: list[dict[str, Any]]
    ) -> None:
        """Delete the staged rows of ``unit_ids`` (with or without a receipt)."""
        if not unit_ids:
            return
        stage, _ = self.stage_tables(schema_from_text(state["schema"]))
        engine = self.engine()
        try:
            with engine.begin() as connection:
                connection.execute(stage.delete().where(stage.c[UNIT_COLUMN].in_(unit_ids)))
        finally:
            engine.dispose()

    def abandon(self, state: dict[str, Any]) -> None:
        """Drop the staging tables."""
        stage, parts = self.stage_tables(schema_from_text(state["schema"]))
        engine = self.engine()
        try:
            with engine.begin() as connection:
                parts.drop(connection, checkfirst=True)
                stage.drop(connection, checkfirst=True)
        finally:
            engine.dispose()
