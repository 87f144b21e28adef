"""One exception family for everything a user can get wrong.

The command line turns any :class:`BulkInferError` into a one-paragraph message on stderr and exit
status 2, without a traceback. Plugins raise these too (for example a missing input column), and
the runner unwraps them from Ray's task errors so the user sees the same message.
"""

from __future__ import annotations

from typing import Any


class BulkInferError(Exception):
    """Base class: an error the user can fix; its message says what and where."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.message = message
        self.key = key
        super().__init__(_text(message, key))

    def __reduce__(self):  # keep the error picklable across Ray processes
        return (_rebuild, (type(self), self.message, self.key))

    def rebuilt(self, message: str | None = None, key: str | None = None) -> BulkInferError:
        """A new error of this error's own bulkinfer class (``message`` and ``key`` replaced
        where given), without its traceback.

        Ray delivers an error a task raised as an instance of a class it makes on the fly, a
        subclass of both ``ray.exceptions.RayTaskError`` and the original class, whose
        constructor takes other arguments; the class built here is the first in the error's
        method resolution order that Ray did not make. A class bulkinfer does not own (a
        plugin's own subclass, whose constructor may take other arguments) is never called: the
        error is made without its constructor (see :func:`_made`).
        """
        cls = next(
            c
            for c in type(self).__mro__
            if issubclass(c, BulkInferError)
            and not c.__module__.startswith("ray.")
            and "RayTaskError" not in c.__name__
        )
        return _made(cls, self.message if message is None else message, key or self.key)

    def within(self, block: str) -> BulkInferError:
        """This error with its key made absolute under a stage's config block.

        Plugins do not know where they sit in the job, so they name keys relative to their own
        block (``params.condition``, ``stage.batch_size``, or none); ``within("preprocessors[0]")``
        gives ``preprocessors[0].params.condition``. Absolute keys pass unchanged.
        """
        key = self.key
        if not key:
            key = f"{block}.params" if block != "sink" else block
        elif key == "params" or key.startswith(("params.", "stage.")):
            key = f"{block}.{key}"
        return self.rebuilt(key=key)


def _text(message: str, key: str | None) -> str:
    return f"{key}: {message}" if key else message


def _owned(cls: type) -> bool:
    """Whether bulkinfer's core defines ``cls`` (and so knows what its constructor takes)."""
    return cls.__module__ == "pipeline" or cls.__module__.startswith("pipeline.")


def _made(cls: type[BulkInferError], message: str, key: str | None) -> BulkInferError:
    """An error of class ``cls`` saying ``message`` about ``key``.

    A class of bulkinfer's own is constructed; any other (a plugin's subclass, whose
    ``__init__`` may take other arguments or do other things) is made without calling its
    constructor: bulkinfer sets the attributes every :class:`BulkInferError` has.
    """
    if _owned(cls):
        return cls(message, key=key)
    error = BaseException.__new__(cls)
    error.message, error.key = message, key
    error.args = (_text(message, key),)
    return error


def _rebuild(cls: type[BulkInferError], message: str, key: str | None) -> BulkInferError:
    return _made(cls, message, key)


class ConfigError(BulkInferError):
    """The composed configuration is invalid; ``key`` is the dotted path of the bad value."""


class PluginNotFoundError(ConfigError):
    """A config names a plugin that no installed package registers."""


class PluginLoadError(ConfigError):
    """A registered plugin could not be imported or does not implement its interface."""


class PlanError(BulkInferError):
    """The job is valid but cannot run on this cluster (resources, deadlock)."""


class DataError(BulkInferError):
    """The data does not fit the config: a missing file, column, or wrong type."""


class OutputError(BulkInferError):
    """Committing or publishing an output failed (storage full, gone, refused); the finished
    work is kept in the staging folder for ``run.resume=true``."""

    exit_code = 1


class Interrupted(BulkInferError):
    """The user stopped the job (Ctrl-C, SIGINT or SIGTERM); what it finished is kept for
    ``run.resume=true``. The command line prints the message as it is and exits 130.
    ``rows_written`` and ``rows_total``: the rows the job's records hold and the input's rows,
    where known (``metrics.json`` keeps them)."""

    exit_code = 130

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        rows_written: int | None = None,
        rows_total: int | None = None,
    ) -> None:
        super().__init__(message, key=key)
        self.rows_written, self.rows_total = rows_written, rows_total

    def rebuilt(self, message: str | None = None, key: str | None = None) -> BulkInferError:
        error = super().rebuilt(message, key)
        if isinstance(error, Interrupted):
            error.rows_written, error.rows_total = self.rows_written, self.rows_total
        return error


class EmptyInputError(DataError):
    """The source has no rows (``run.allow_empty: true`` publishes an empty output instead)."""

    @classmethod
    def for_source(
        cls, where: Any, why: str = "", key: str = "source.params.path"
    ) -> EmptyInputError:
        where = ", ".join(where) if isinstance(where, list) else where
        return cls(
            f"the source produced no rows from {where}{f' ({why})' if why else ''}. Set "
            "run.allow_empty=true to publish an empty output instead.",
            key=key,
        )


class ColumnNotFoundError(DataError):
    """A stage reads a column that the data does not have."""

    @classmethod
    def for_column(
        cls, column: str, available: list[str], *, key: str | None = None
    ) -> ColumnNotFoundError:
        listed = ", ".join(available) if available else "(none)"
        return cls(f"column {column!r} is not in the data; available columns: {listed}", key=key)
