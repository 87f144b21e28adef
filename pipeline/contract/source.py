"""Sources: read the input into Ray Datasets, one per work unit, on the driver.

Required: :meth:`Source.read`. Optional: ``read_unit`` (a unit's rows as Arrow tables, in an
order every run repeats: the core then reads them itself, gives each row an id and resumes
a job from its last written row), ``schema`` (the types, known before the job), ``count_rows``,
``units`` (work units), ``explain_read_error``, ``preview`` (a dry run's first rows) and
``decoder`` (a map stage run right after the read).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.contract.plugin import _IOPlugin

if TYPE_CHECKING:  # Ray and pyarrow are imported by the plugins that use them.
    import pyarrow as pa
    import ray.data

    from pipeline.contract.stage import MapStage


@dataclass(frozen=True)
class WorkUnit:
    """A deterministic slice of a source's input: one read task of the job's one execution,
    whose rows are named by (unit, place in it), so a resumed job reads only the rows no
    write record holds.

    ``id`` must be stable across runs of the same config on the same input (a resume compares
    the units); ``spec`` is the source's own JSON-able description (files, a row range).
    """

    id: str
    spec: Any = None


#: The unit of a source that does not split its input: the whole source, run in one piece.
WHOLE_SOURCE = WorkUnit(id="all")


@dataclass(frozen=True)
class Preview:
    """The first rows of a source, read on the driver without Ray (:meth:`Source.preview`)."""

    #: At most the ``limit`` asked for, with the types :meth:`Source.schema` gives.
    rows: pa.Table
    #: Rows of the whole input: exact, estimated, or None when unknown.
    total_rows: int | None
    #: How ``total_rows`` was found, for the dry run's report, e.g. "exact: Parquet footers" or
    #: "estimated: 2.1 MiB of files at the first 1,000 rows' bytes per row".
    how: str = ""


class Source(_IOPlugin, ABC):
    """Reads the input into Ray Datasets, one per work unit. Runs on the driver."""

    #: A map stage run on the rows right after the read (decoding files, parsing records), with
    #: the source's params, inside the guard with key ``source`` and the ``source.stage``
    #: settings: a row that does not decode is named, skipped or set aside
    #: (``source.stage.on_error``). :meth:`schema` then gives what the read yields and the
    #: decoder's ``output_schema`` what it makes of it. None: the read yields the rows.
    decoder: ClassVar[type[MapStage] | None] = None

    def schema(self, params: Any) -> pa.Schema | None:
        """The columns and Arrow types the source yields, found on the driver without Ray.

        Exactly what :meth:`read` will produce (a file source reads metadata or a sample of its
        first file, then reads every file with those types). The planner checks every stage and the
        sink against it before any model loads. Raise a :class:`~pipeline.contract.errors.DataError`
        naming the key for an input that cannot be reached or read, and
        :class:`~pipeline.contract.errors.EmptyInputError` for one without rows. None: unknown until
        read (the runner then asks the first unit's dataset).
        """
        return None

    def count_rows(self, params: Any, unit: WorkUnit) -> int | None:
        """Rows in ``unit`` where the source knows them cheaply, on the driver, without
        reading the rows (Parquet footers, inline items); else None. Exactly the rows
        :meth:`read_unit` yields: the core sizes the stages' windows by them
        (:func:`pipeline.plan.shares.fit_windows`), shows them as the progress total and, when
        a resumed job's records hold them all, publishes without running a stage."""
        return None

    def units(self, params: Any) -> list[WorkUnit]:
        """Split the input into work units (sized by ``self.io.unit_rows``/``unit_bytes``).

        The job reads every unit in one execution, a read task each, in order (see
        :class:`WorkUnit`). The default is one unit: the whole source.
        """
        return [WHOLE_SOURCE]

    def read_unit(self, params: Any, unit: WorkUnit) -> Iterator[pa.Table]:
        """The rows of ``unit``, as Arrow tables with the types :meth:`schema` gives, in the
        same order in every run of the job (a row's place in it is its id); runs inside a Ray
        read task, without Ray. Where a source defines it, the core reads every unit of the
        job in one Ray Data execution and a resumed job reads only the rows not yet written;
        a source that does not (the default) is read with :meth:`read`, and a job it feeds
        resumes from its start. Raise a :class:`~pipeline.contract.errors.DataError` naming
        the file for input that does not parse."""
        raise NotImplementedError

    @classmethod
    def reads_units(cls) -> bool:
        """Whether the source defines :meth:`read_unit`."""
        return cls.read_unit is not Source.read_unit

    @abstractmethod
    def read(self, params: Any, unit: WorkUnit = WHOLE_SOURCE) -> ray.data.Dataset:
        """A lazy Dataset of ``unit``'s rows (one returned by :meth:`units`, or the whole
        source); pass ``self.io`` settings to Ray's read call."""

    def explain_read_error(self, params: Any, unit: WorkUnit) -> Exception | None:
        """After reading ``unit`` failed: a BulkInferError naming the input at fault, if found."""
        return None

    def preview(self, params: Any, limit: int) -> Preview | None:
        """At most ``limit`` rows from the start of the input and the input's row count, read
        on the driver without Ray (a dry run hands them to the stages' :meth:`MapStage.estimate`).
        None: the source cannot preview (the default)."""
        return None
