"""The Ray Data write path of a :class:`~.protocol.WriterTarget`'s work unit.

Each write task hands its blocks to the target's :class:`~.protocol.UnitWriter` and returns the
parts it staged; the driver collects them into the unit's receipt (:func:`write_unit`). An
engine's error in a write task becomes an :class:`~pipeline.contract.errors.OutputError` naming the
target, in one line without row values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ray.data import Datasink
from ray.data.block import BlockAccessor

from pipeline.contract.errors import BulkInferError, OutputError
from plugins.sinks.targets.protocol import UnitWriter, receipt

if TYPE_CHECKING:
    import ray.data

    from plugins.sinks.targets.protocol import WriterTarget


class StagedDatasink(Datasink[list[dict[str, Any]]]):
    """A Ray Data datasink that hands each write task's blocks to a :class:`UnitWriter`.

    After the write, :attr:`parts` holds every part the write tasks returned, in task order.
    """

    def __init__(self, writer: UnitWriter, location: str, key: str) -> None:
        self.writer, self.location, self.key = writer, location, key
        self.parts: list[dict[str, Any]] = []

    def get_name(self) -> str:
        return "Staged"

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:
        tables = (BlockAccessor.for_block(block).to_arrow() for block in blocks)
        try:
            return self.writer.write(tables)
        except BulkInferError:
            raise
        except Exception as exc:  # an engine's error, as one line without row values
            raise OutputError(
                f"writing into {self.location} failed: {type(exc).__name__}: {_first_line(exc)}",
                key=self.key,
            ) from None

    def on_write_complete(self, write_result: Any) -> None:
        self.parts = [part for parts in write_result.write_returns for part in parts]


def _first_line(exc: BaseException) -> str:
    """An error's own first line (a database driver's, not SQLAlchemy's statement dump)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_unit(
    target: WriterTarget,
    dataset: ray.data.Dataset,
    state: dict[str, Any],
    unit_id: str,
    ray_remote_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``dataset`` into ``target``'s staging for ``unit_id``; return the unit's receipt."""
    sink = StagedDatasink(target.writer(state, unit_id), target.location, target.key)
    dataset.write_datasink(sink, ray_remote_args=dict(ray_remote_args or {}))
    return receipt(unit_id, sink.parts)
