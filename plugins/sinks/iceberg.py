"""``sink=iceberg``: an Iceberg table through pyiceberg, published in one catalog commit."""

from __future__ import annotations

from typing import ClassVar

from pipeline.contract.sink import TableSink
from plugins.sinks.targets.iceberg_target import IcebergParams, IcebergTarget


class IcebergSink(TableSink):
    """Write an Iceberg table (created when missing): one catalog commit per job."""

    Params = IcebergParams
    plugin_api: ClassVar[str] = "1.5"  # its target keeps the job of its last commit
    libraries = ("pyiceberg",)
    extras = {"iceberg": ("pyiceberg",)}

    def target(self, params: IcebergParams) -> IcebergTarget:
        return IcebergTarget(params)
