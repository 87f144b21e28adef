"""``sink=lance``: a Lance dataset (a LanceDB table), published in one commit."""

from __future__ import annotations

from typing import ClassVar

from pipeline.contract.sink import TableSink
from plugins.sinks.targets.lance_target import LanceParams, LanceTarget


class LanceSink(TableSink):
    """Write a Lance dataset (LanceDB opens it as a table): one new version per job."""

    Params = LanceParams
    plugin_api: ClassVar[str] = "1.5"  # its target keeps the job of its last commit
    libraries = ("pylance", "lancedb")
    extras = {"lance": ("lance",)}

    def target(self, params: LanceParams) -> LanceTarget:
        return LanceTarget(params)
