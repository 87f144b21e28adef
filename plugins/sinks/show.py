"""Print the first rows, like the seed's ``predictions.show(limit=1)``."""

from __future__ import annotations

from pydantic import Field

from pipeline.contract.plugin import PluginParams
from pipeline.contract.sink import DatasetSink, SinkResult


class ShowParams(PluginParams):
    limit: int = Field(default=5, gt=0, description="How many rows to print.")
    max_chars: int = Field(default=200, gt=10, description="Truncate each printed value to this.")


def _short(value, max_chars: int) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


class ShowSink(DatasetSink):
    """Print the first rows to standard output (reads only as much as it prints)."""

    Params = ShowParams

    def write(self, dataset, params: ShowParams) -> SinkResult:
        rows = dataset.take(params.limit)
        for row in rows:
            fields = (f"{k!r}: {_short(v, params.max_chars)}" for k, v in row.items())
            print("{" + ", ".join(fields) + "}")
        return SinkResult(location=None, rows=len(rows))
