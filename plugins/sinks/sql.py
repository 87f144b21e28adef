"""``sink=sql``: a table in any database SQLAlchemy reaches, published in one transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pipeline.contract.sink import TableSink
from plugins.sinks.targets.sql_params import SqlParams

if TYPE_CHECKING:
    from plugins.sinks.targets.sql_target import SqlTarget


class SqlSink(TableSink):
    """Write a database table through SQLAlchemy: staged rows moved in one transaction."""

    Params = SqlParams
    plugin_api: ClassVar[str] = "1.5"  # its target marks the halt point inside its commit
    libraries = ("sqlalchemy",)
    extras = {"sql": ("sqlalchemy",)}

    def target(self, params: SqlParams) -> SqlTarget:
        from plugins.sinks.targets.sql_target import SqlTarget  # SQLAlchemy: only when it runs

        return SqlTarget(params)
