"""The job's one progress line on stderr, in rows of the whole job.

While a staged job's execution runs, a thread on the driver asks the ledger
(:meth:`pipeline.execute.ledger.Ledger.progress`) how many rows the write tasks have recorded
and how many rows the stages set aside, and prints::

    bulkinfer: 1,200 of 3,000 rows written (40%), 350 rows/s, ETA 5s, 3 rows set aside

and, for a stage that counts tokens (an LLM endpoint's), the tokens and cost so far, this run's:
``..., ETA 2m10s, 48,210 tokens, cost 0.0412``.

Rows an earlier run wrote count from the start (a resumed job starts at them); rows/s and the
ETA are this run's (its rows over the seconds since its execution started). Without a total
(a source that cannot count its rows without reading them) the line has neither a percentage
nor an ETA: ``bulkinfer: 1,200 rows written, 350 rows/s``. Rows that a stage filtered out or
set aside are never written, so such a job ends below its total.

``run.progress``: ``bar`` redraws the line in place (a carriage return) at most
:data:`BAR_EVERY_S` apart; ``log`` prints a new line at most every :data:`LOG_EVERY_S` seconds
(CI, a log file: a line every 15 s reads like a heartbeat without flooding the log), and only
when the count changed; ``auto`` is ``bar`` when stderr is a terminal, ``log`` otherwise;
``off`` prints nothing. Every mode but ``off`` ends with the line of the final count.

A ``bar`` fits the terminal (:func:`terminal_width`; 80 columns when it cannot tell), one column
spare so that the cursor never wraps: a line too wide drops its least important parts first, in
the order of :data:`DROP_ORDER` (set-aside rows, tokens, cost, rows/s), so rows written, the
percentage and the ETA stay; on a narrow terminal the count shortens to ``1,200/3,000 rows
(40%)``, then ``bulkinfer:`` goes, then the ETA, and only then is the line cut, between words.
``log`` lines are never shortened.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

log = logging.getLogger("bulkinfer")

#: Seconds between redraws of the line on a terminal (about two a second).
BAR_EVERY_S = 0.5
#: Seconds between printed lines when stderr is not a terminal (CI, a log file).
LOG_EVERY_S = 15.0
#: Seconds a poll of the ledger may take before that update is skipped.
POLL_TIMEOUT_S = 5.0

#: What a poll returns: rows written by this run, rows set aside by this run, and the stages'
#: running amounts (``prompt_tokens``, ``completion_tokens``, ``cost``; those reported).
Poll = Callable[[], tuple[int, int, dict[str, float]]]
#: The parts of the line after the count, as shown.
PARTS = ("rate", "eta", "set_aside", "tokens", "cost")
#: The parts a line too wide for the terminal drops, the least important first; the count (rows
#: written, of the total, the percentage) and the ETA are never dropped.
DROP_ORDER = ("set_aside", "tokens", "cost", "rate")
#: Columns assumed when the terminal's width cannot be found.
DEFAULT_COLUMNS = 80


def resolve_mode(mode: str, stream: TextIO) -> str:
    """``bar``, ``log`` or ``off``: ``auto`` is ``bar`` on a terminal, else ``log``."""
    if mode != "auto":
        return mode
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError):  # a closed or replaced stream
        return "log"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for one line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_parts(
    written: int,
    total: int | None,
    rate: float | None,
    set_aside: int = 0,
    done: bool = False,
    amounts: dict[str, float] | None = None,
) -> dict[str, str]:
    """The line's parts by name: ``count`` and those of :data:`PARTS` that have a value."""
    parts: dict[str, str] = {}
    if total is not None:
        percent = 100.0 * written / total if total else 100.0
        parts["count"] = f"{written:,} of {total:,} rows written ({percent:.0f}%)"
        parts["short_count"] = f"{written:,}/{total:,} rows ({percent:.0f}%)"
    else:
        parts["count"] = f"{written:,} rows written"
        parts["short_count"] = f"{written:,} rows"
    if rate is not None:
        parts["rate"] = f"{rate:,.1f} rows/s" if rate < 100 else f"{rate:,.0f} rows/s"
        if total is not None and not done and rate > 0 and written < total:
            parts["eta"] = f"ETA {duration((total - written) / rate)}"
    if set_aside:
        parts["set_aside"] = f"{set_aside:,} rows set aside"
    amounts = amounts or {}
    tokens = amounts.get("prompt_tokens", 0) + amounts.get("completion_tokens", 0)
    if tokens:
        parts["tokens"] = f"{tokens:,.0f} tokens"
    if amounts.get("cost"):
        parts["cost"] = f"cost {amounts['cost']:.4g}"
    return parts


def _join(parts: dict[str, str], count: str, keep: set[str], prefix: str = "bulkinfer: ") -> str:
    return prefix + ", ".join(
        [parts[count], *(parts[name] for name in PARTS if name in keep and name in parts)]
    )


def _cut(text: str, width: int) -> str:
    """``text`` in ``width`` characters, cut between words (mid-word only for one long word)."""
    words = text.split(" ")
    while len(words) > 1 and len(" ".join(words)) > width:
        words.pop()
    return " ".join(words).rstrip(",")[:width]


def progress_text(
    written: int,
    total: int | None,
    rate: float | None,
    set_aside: int = 0,
    done: bool = False,
    amounts: dict[str, float] | None = None,
    width: int | None = None,
) -> str:
    """The line (see the module docstring); ``rate`` None: not known yet; ``amounts``: the
    stages' running tokens and cost; ``width``: the most characters it may take (None: any),
    reached by dropping parts in the order of :data:`DROP_ORDER`."""
    parts = progress_parts(written, total, rate, set_aside, done, amounts)
    keep = set(PARTS)
    text = _join(parts, "count", keep)
    if width is None:
        return text
    for name in DROP_ORDER:
        if len(text) <= width:
            return text
        keep.discard(name)
        text = _join(parts, "count", keep)
    # A narrow terminal: the short count with the ETA, then without "bulkinfer: ", then
    # without the ETA, and only then cut between words.
    for kept, prefix in ((keep, "bulkinfer: "), (keep, ""), (set(), "")):
        if len(text) <= width:
            return text
        text = _join(parts, "short_count", kept, prefix)
    return text if len(text) <= width else _cut(text, width)


def terminal_width(stream: TextIO) -> int:
    """The columns of the terminal ``stream`` writes to: ``COLUMNS`` where set, else the
    terminal's, else :func:`shutil.get_terminal_size`'s (stdout's terminal, else 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal, or no file behind it
            columns = 0
    if columns <= 0:
        columns = shutil.get_terminal_size((DEFAULT_COLUMNS, 24)).columns
    return columns if columns > 0 else DEFAULT_COLUMNS


class ProgressLine:
    """The line of one execution: :meth:`start` before it, :meth:`finish` after it (or
    :meth:`stop` when it failed). ``poll`` returns this run's rows written and set aside;
    ``start_rows`` are the rows earlier runs wrote; ``total`` the job's rows, where known."""

    def __init__(
        self,
        mode: str,
        poll: Poll,
        total: int | None,
        start_rows: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.poll, self.total, self.start_rows = poll, total, start_rows
        self.clock = clock
        self.started = clock()
        self.shown: tuple[int, int] | None = None
        self.amounts: dict[str, float] = {}
        self.width = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.mode in ("bar", "log")

    def start(self) -> None:
        """Start drawing in a daemon thread (nothing in ``off`` mode)."""
        self.started = self.clock()
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._loop, name="bulkinfer-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        every = BAR_EVERY_S if self.mode == "bar" else LOG_EVERY_S
        while not self._stopping.wait(every):
            try:
                written, set_aside, self.amounts = self.poll()
            except Exception as exc:  # noqa: BLE001 - a missed update, never the job's failure
                log.debug("progress: the ledger did not answer: %s", exc)
                continue
            self.show(written, set_aside)

    def text(
        self, written: int, set_aside: int, done: bool = False, width: int | None = None
    ) -> str:
        """The line for this run's ``written`` rows (earlier runs' rows added), in ``width``
        characters where given."""
        seconds = self.clock() - self.started
        rate = written / seconds if written and seconds > 0 else None
        total = self.start_rows + written
        return progress_text(total, self.total, rate, set_aside, done, self.amounts, width)

    def show(self, written: int, set_aside: int, done: bool = False) -> None:
        """Draw the line (bar) or print it (log, only when the count changed)."""
        if not self.enabled:
            return
        if self.mode == "log" and not done and self.shown == (written, set_aside):
            return
        self.shown = (written, set_aside)
        try:
            if self.mode == "bar":
                # One column spare: a line as wide as the terminal leaves the cursor at its
                # edge, where some terminals wrap and the next redraw starts a new row.
                columns = max(1, terminal_width(self.stream) - 1)
                line = self.text(written, set_aside, done, columns)
                pad = " " * max(0, min(self.width, columns) - len(line))
                self.width = len(line)
                self.stream.write("\r" + line + pad + ("\n" if done else ""))
            else:
                self.stream.write(self.text(written, set_aside, done) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream: the job goes on without its line
            self._stopping.set()

    def stop_drawing(self) -> None:
        """Stop the thread; what is on screen stays as it is."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL_TIMEOUT_S + BAR_EVERY_S)
            self._thread = None

    def stop(self) -> None:
        """Stop drawing; a bar on screen is ended with a newline (the job failed or stopped)."""
        self.stop_drawing()
        if self.mode == "bar" and self.width:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self.width = 0

    def finish(self, written: int, set_aside: int, amounts: dict[str, float] | None = None) -> None:
        """Stop drawing and print the final line: this run's exact rows written and set aside
        (and the stages' final ``amounts``, when given)."""
        self.stop_drawing()
        if amounts is not None:
            self.amounts = amounts
        self.show(written, set_aside, done=True)
        self.width = 0


def ledger_poll(ledger: Any) -> Poll:
    """A poll of the ledger actor's :meth:`~pipeline.execute.ledger.Ledger.progress`."""

    def poll() -> tuple[int, int, dict[str, float]]:
        import ray

        written, set_aside, amounts = ray.get(ledger.progress.remote(), timeout=POLL_TIMEOUT_S)
        return int(written), int(set_aside), dict(amounts)

    return poll
