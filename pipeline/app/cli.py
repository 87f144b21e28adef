"""Command-line glue shared by the Hydra app: error reporting and resolvers (no Hydra import)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from pipeline.contract.errors import BulkInferError, Interrupted

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample_path(name: str) -> str:
    """``${bulkinfer.sample:NAME}``: the path of a data file shipped with bulkinfer."""
    path = SAMPLES / name
    if not path.exists():
        available = ", ".join(sorted(p.name for p in SAMPLES.iterdir()))
        raise BulkInferError(f"no sample data set {name!r}; shipped: {available}")
    return str(path)


def report(error: BulkInferError) -> int:
    """Print a user error the way every bulkinfer command does; return its exit status.

    A stopped job (:class:`~pipeline.contract.errors.Interrupted`) is no error: its line says
    what was written and how to finish."""
    what = "" if isinstance(error, Interrupted) else "error: "
    print(f"bulkinfer: {what}{error}", file=sys.stderr)
    return error.exit_code


#: Exit status of a process stopped by SIGINT (128 + 2), as shells report Ctrl-C.
STOPPED = 130


def kill_descendants() -> None:
    """SIGKILL every process this one started, and theirs: the embedded Ray (its GCS, raylet,
    workers and agents). Ending at once skips Ray's shutdown, and Ray's agents, which get the
    terminal's SIGINT too, outlived their raylet for good (about 180 MB). A cluster's processes
    are no children of the driver and are left alone."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()


class Stop:
    """What :func:`stop_signals` yields: :meth:`published` tells it the job's output is final."""

    def __init__(self) -> None:
        self.stopping = False
        self.finishing = False

    def published(self) -> None:
        """The output is published: a Ctrl-C or SIGTERM from now on no longer interrupts the
        job, which only releases its workers and writes its metrics; a second one still ends
        the process at once."""
        self.finishing = True


@contextlib.contextmanager
def stop_signals() -> Iterator[Stop]:
    """Ctrl-C (SIGINT) or SIGTERM stops the job as a ``KeyboardInterrupt``, which the runner
    turns into :class:`~pipeline.contract.errors.Interrupted` with what it kept; a second one
    while the job stops ends the process at once with status 130 (one line, and the embedded
    Ray's processes killed: :func:`kill_descendants`). Every step of a staged
    output is atomic, so the staging area stays resumable either way. Once the yielded
    :class:`Stop` is told the output is published, the first signal only prints that the job
    is finishing (the output is whole; a resume would have nothing to do). Outside the main
    thread (where Python delivers signals) nothing changes."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}

    def at_once(signum: int, frame: object) -> None:
        what = (
            "the output was already published"
            if stop.finishing
            else "run again with run.resume=true to finish"
        )
        print(f"bulkinfer: stopped at once; {what}", file=sys.stderr, flush=True)
        kill_descendants()
        os._exit(STOPPED)

    def first(signum: int, frame: object) -> None:
        stop.stopping = True
        for s in signals:
            signal.signal(s, at_once)
        if not stop.finishing:
            raise KeyboardInterrupt
        print(
            "bulkinfer: the output is published; finishing (press Ctrl-C again to exit now)",
            file=sys.stderr,
        )

    for s in signals:
        signal.signal(s, first)
    try:
        yield stop
    finally:
        if not stop.stopping:  # once stopping, a second signal still ends the process at once
            for s, handler in previous.items():
                signal.signal(s, handler)
