"""``sink=iceberg``: an Iceberg table through pyiceberg, published in one catalog commit."""

from __future__ import annotations

from pipeline.contract.sink import TableSink
from plugins.sinks.targets.iceberg_target import IcebergParams, IcebergTarget


class IcebergSink(TableSink):
    """Write an Iceberg table (created when missing): one catalog commit per job."""

    Params = IcebergParams
    libraries = ("pyiceberg",)
    extras = {"iceberg": ("pyiceberg",)}

    def target(self, params: IcebergParams) -> IcebergTarget:
        return IcebergTarget(params)
