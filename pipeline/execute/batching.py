"""Rows per plugin call, decided at run time: ``batch_size: auto`` probing and OOM halving.

Ray Data hands a map stage batches of a fixed size. :class:`AdaptiveBatches` sits between Ray and
the plugin and may cut each batch into smaller calls:

* **Out of memory.** A call that raises an out-of-memory error (``torch.cuda.OutOfMemoryError``
  or any error of that name, or a ``RuntimeError`` saying "out of memory") is retried as two
  halves, recursively down to one row. The largest size that fitted becomes the limit for the
  rest of the job, so later batches are pre-cut instead of failing again, and the choice is
  reported. This is the seed's advice ("if you run out of memory, lower batch_size") automated.
* **auto.** The first calls of each worker probe sizes 16, 32, 64, ... on real rows (the
  results are kept, nothing is computed twice) until :data:`AUTO_PATIENCE` doublings in a row
  did not raise rows/s by :data:`AUTO_MIN_GAIN` over the best so far (a plateau can precede a
  rise, e.g. when a bigger call lets a predictor sort rows by length), an out-of-memory error,
  a peak RSS over ``memory_limit``, or :data:`AUTO_MAX_ROWS`; the fastest size that fitted is
  kept. This works for GPU stages too:
  Ray's own ``batch_size="auto"`` sizes batches by bytes, for CPU functions only.

Nothing here imports a model library; the batch formats are Ray's three (pyarrow Table, pandas
DataFrame, dict of numpy arrays or lists).
"""

from __future__ import annotations

import gc
import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from pipeline.contract.batches import batch_rows, concat_batches, slice_batch
from pipeline.contract.settings import AUTO_MAX_ROWS

log = logging.getLogger("bulkinfer")

#: Smallest probed size.
AUTO_MIN_ROWS = 16
#: A bigger batch counts as better only if it raises rows/s by at least this fraction.
AUTO_MIN_GAIN = 0.05
#: The probe stops after this many doublings in a row that were not better than the best.
AUTO_PATIENCE = 3


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator (or allocator) out-of-memory error raised by a model library."""
    if type(exc).__name__ in {"OutOfMemoryError", "OutOfMemory"} and not type(
        exc
    ).__module__.startswith("ray"):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in message or "cudaerrormemoryallocation" in message
    )


def _free_accelerator_cache() -> None:
    """Return cached device memory after an OOM, if a library that caches it is loaded."""
    gc.collect()
    torch = sys.modules.get("torch")  # never imported here: only used if a plugin loaded it
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # best effort; the retry itself reports a real failure
            pass


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes (Linux reports KiB, macOS bytes);
    since the last reset where the OS allows one (``metrics.reset_peak_rss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class AdaptiveBatches:
    """Calls ``fn`` on a batch, cut into smaller calls when memory or ``auto`` says so.

    ``report(message)`` receives one line each time the size changes (probe result, halving);
    ``clock`` times the probe's calls and ``peak_memory`` measures them (default: peak RSS).
    """

    def __init__(
        self,
        key: str,
        auto: bool = False,
        memory_limit: int | None = None,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        peak_memory: Callable[[], int] | None = None,
        limit: int | None = None,
    ) -> None:
        self.key = key
        self.memory_limit = memory_limit
        self.report = report or (lambda message: None)
        self.clock = clock
        self.peak_memory = peak_memory or peak_rss_bytes
        #: Most rows per call (None: as Ray gives them): the stage's batch size where Ray hands
        #: over whole blocks, lowered by the probe or an OOM.
        self.limit: int | None = limit
        self.probing = auto
        self._size = AUTO_MIN_ROWS
        self._warm = False
        self._rates: list[tuple[int, float]] = []

    # -- public -------------------------------------------------------------------------------

    def __call__(self, fn: Callable[[Any], Any], batch: Any) -> Any:
        rows = batch_rows(batch)
        if rows == 0:
            return fn(batch)
        parts, start = [], 0
        while start < rows:
            size = self._next_size(rows - start)
            stop = min(rows, start + size)
            parts.append(self._timed(fn, slice_batch(batch, start, stop) if size < rows else batch))
            start = stop
        return concat_batches(parts)

    # -- sizes --------------------------------------------------------------------------------

    def _next_size(self, left: int) -> int:
        if self.probing:
            return min(left, self._size)
        return min(left, self.limit) if self.limit else left

    def _timed(self, fn: Callable[[Any], Any], piece: Any) -> Any:
        rows = batch_rows(piece)
        rss_before = self.peak_memory() if self.probing else 0
        started = self.clock()
        halved_before = self.limit
        out = self._call(fn, piece)
        if self.probing:
            oom = self.limit is not None and self.limit != halved_before
            self._probe_step(rows, self.clock() - started, rss_before, oom)
        return out

    def _call(self, fn: Callable[[Any], Any], piece: Any) -> Any:
        """``fn(piece)``; on out-of-memory, the two halves, recursively, down to one row."""
        rows = batch_rows(piece)
        try:
            return fn(piece)
        except Exception as exc:
            if not is_out_of_memory(exc) or rows <= 1:
                raise
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        # Retried outside the except block: the error's traceback (and the tensors its frames
        # hold) is released before the halves run.
        _free_accelerator_cache()
        half = rows // 2
        if self.limit is None or half < self.limit:
            self.limit = half
            self._say(
                f"{self.key}: a batch of {rows} rows ran out of memory ({error}); "
                f"continuing with batches of at most {half} rows"
            )
        first = self._call(fn, slice_batch(piece, 0, half))
        return concat_batches([first, self._call(fn, slice_batch(piece, half, rows))])

    def _probe_step(self, rows: int, seconds: float, rss_before: int, oom: bool) -> None:
        if rows < self._size:  # the tail of a Ray batch: too small to measure this size
            return
        if not self._warm:  # the first call pays for lazy set-up (kernels, caches)
            self._warm = True
            return
        rate = rows / max(seconds, 1e-9)
        peak = self.peak_memory()
        too_big = self.memory_limit is not None and peak > self.memory_limit
        if oom:
            return self._settle(self.limit, f"out of memory above {self.limit} rows")
        if too_big:
            fallback = self._rates[-1][0] if self._rates else max(1, self._size // 2)
            grew, limit = (peak - rss_before) >> 20, self.memory_limit >> 20
            return self._settle(
                fallback,
                f"{self._size} rows took peak memory to {peak >> 20} MiB (+{grew} MiB), over "
                f"the limit of {limit} MiB",
            )
        self._rates.append((self._size, rate))
        best = self._best_index()
        if len(self._rates) - 1 - best >= AUTO_PATIENCE:
            return self._settle(self._rates[best][0], "throughput stopped rising")
        if self._size * 2 > AUTO_MAX_ROWS:
            return self._settle(self._rates[best][0], f"probed up to {AUTO_MAX_ROWS} rows")
        self._size *= 2

    def _best_index(self) -> int:
        """The size that counts as best: a bigger one must beat it by AUTO_MIN_GAIN to replace it
        (so a plateau settles on its smallest size: same speed, less memory)."""
        best = 0
        for i, (_, rate) in enumerate(self._rates):
            if rate >= self._rates[best][1] * (1 + AUTO_MIN_GAIN):
                best = i
        return best

    def _settle(self, size: int | None, why: str) -> None:
        self.probing = False
        size = max(1, size or 1)
        self.limit = min(size, self.limit) if self.limit else size
        rates = ", ".join(f"{s}: {r:,.0f}" for s, r in self._rates)
        self._say(
            f"{self.key}: batch_size auto -> {self.limit} rows ({why}; rows/s by size: {rates})"
        )

    def _say(self, message: str) -> None:
        log.warning("%s", message)
        self.report(message)
