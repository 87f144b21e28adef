"""``sink=sql``: a table in any database SQLAlchemy reaches, published in one transaction."""

from __future__ import annotations

from pipeline.contract.sink import TableSink
from plugins.sinks.targets.sql_target import SqlParams, SqlTarget


class SqlSink(TableSink):
    """Write a database table through SQLAlchemy: staged rows moved in one transaction."""

    Params = SqlParams
    libraries = ("sqlalchemy",)

    def target(self, params: SqlParams) -> SqlTarget:
        return SqlTarget(params)
