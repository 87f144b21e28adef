"""A SQL table sink's job record and unit markers, kept in its own database.

Two small tables beside the target: ``<table>__bulkinfer_job`` (one row: the job record as JSON)
and ``<table>__bulkinfer_units`` (one row per committed unit: its marker as JSON). Each step is
one transaction. The target's publishing transaction drops both (:func:`drop_record`), so the
rows become visible and the job ends in the same commit. Loading never creates anything: a
database without these tables (or a SQLite file that does not exist) has no job record.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from plugins.sinks.targets.sql_target import SqlTarget

JOB_ROW = 1


def _tables(target: SqlTarget) -> tuple[sa.Table, sa.Table]:
    metadata = sa.MetaData()
    job = sa.Table(
        target.job_name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("record", sa.Text, nullable=False),
        schema=target.db_schema,
    )
    units = sa.Table(
        target.units_name,
        metadata,
        sa.Column("unit", sa.String(200), primary_key=True),
        sa.Column("marker", sa.Text, nullable=False),
        schema=target.db_schema,
    )
    return job, units


def drop_record(target: SqlTarget, connection: Any) -> None:
    """Drop the job's record and markers inside the caller's transaction."""
    job, units = _tables(target)
    units.drop(connection, checkfirst=True)
    job.drop(connection, checkfirst=True)


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)


class SqlJobStore:
    """The job record and markers of ``target`` (see the module docstring); a
    ``pipeline.contract.sink.JobStore``."""

    def __init__(self, target: SqlTarget) -> None:
        from plugins.sinks.targets.sql_target import password

        self.target = target
        # Read on the driver: the job's write tasks add their records with it.
        self.secret = password(target.params)
        self.job_table, self.units_table = _tables(target)
        self.location = (
            f"{target.shown_url} tables {target.job_name} and {target.units_name} "
            f"(beside {target.params.table})"
        )

    def start_over(self, named: bool = True) -> str:
        t = self.target
        return f"drop tables {t.job_name}, {t.units_name}, {t.stage_name} and {t.parts_name}"

    def _run(self, step: Any) -> Any:
        from plugins.sinks.targets.sql_target import _engine

        engine = _engine(self.target.params, self.secret)
        try:
            with engine.begin() as connection:
                return step(connection)
        except sa.exc.SQLAlchemyError as exc:
            raise self.target._failure("reaching the job record in", exc) from None
        finally:
            engine.dispose()

    def _has_record(self, connection: Any) -> bool:
        return sa.inspect(connection).has_table(self.target.job_name, schema=self.target.db_schema)

    def load(self) -> dict[str, Any] | None:
        from plugins.sinks.targets.sql_target import missing_sqlite_file

        if missing_sqlite_file(self.target.params.url):
            return None

        def read(connection: Any) -> dict[str, Any] | None:
            if not self._has_record(connection):
                return None
            text = connection.execute(sa.select(self.job_table.c.record)).scalar()
            return json.loads(text) if text else None

        return self._run(read)

    def start(self, job: dict[str, Any]) -> None:
        def write(connection: Any) -> None:
            drop_record(self.target, connection)
            self.job_table.metadata.create_all(connection)
            connection.execute(self.job_table.insert().values(id=JOB_ROW, record=_dumps(job)))

        self._run(write)

    def save(self, job: dict[str, Any]) -> None:
        table = self.job_table
        self._run(
            lambda c: c.execute(
                table.update().where(table.c.id == JOB_ROW).values(record=_dumps(job))
            )
        )

    def committed(self) -> dict[str, dict[str, Any]]:
        def read(connection: Any) -> dict[str, dict[str, Any]]:
            if not self._has_record(connection):
                return {}
            rows = connection.execute(sa.select(self.units_table.c.marker)).scalars()
            markers = [json.loads(text) for text in rows]
            return {m["unit"]: m for m in markers}

        return self._run(read)

    def add_marker(self, marker: dict[str, Any]) -> None:
        units = self.units_table

        def write(connection: Any) -> None:
            connection.execute(units.delete().where(units.c.unit == marker["unit"]))
            connection.execute(units.insert().values(unit=marker["unit"], marker=_dumps(marker)))

        self._run(write)

    def remove(self) -> None:
        from plugins.sinks.targets.sql_target import missing_sqlite_file

        if not missing_sqlite_file(self.target.params.url):
            self._run(lambda connection: drop_record(self.target, connection))
