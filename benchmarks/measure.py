"""Run one command as a child process and measure it from the outside (Linux ``/proc``).

* **wall time**: from spawn to exit, the whole process (interpreter, imports, Ray start-up, job).
* **peak memory**: the largest sum, over the process and all its descendants (Ray's GCS, raylet
  and workers are children of the driver), of their proportional set size (PSS: shared pages,
  such as Ray's object store, counted once across processes), sampled every 0.2 s for the first
  3 s (a short process is seen at all), then every second. Reading PSS walks each process's
  page tables: about 55 ms of kernel time for bulkinfer's 14 processes during the embedding job,
  time taken from the job on 2 cores. Sampled every 0.2 s, the 4,000-sentence embedding job ran
  15-20% slower than unobserved; every second, about 5% (a single-process plain loop costs a
  few ms per sample), so ratios against the plain loops slightly understate the multi-process
  variants.
* **first output**: when the first Parquet file appeared under the output folder (any depth:
  Ray writes a file per write task; bulkinfer writes into a staging folder beside the output),
  looked for every 0.2 s.
* the child's own ``BENCH {json}`` line (the job's time without start-up, model time, ...).

Before the first run, :func:`compile_bytecode` byte-compiles every Python the variants use, as
``pip install`` does by default: an environment installed with ``--no-compile`` and run with
``PYTHONDONTWRITEBYTECODE=1`` (this project's machine) compiles pandas, numpy, pydantic and the
rest from source in every process at every start, which costs a multi-process variant several
times what it costs a single process (the LLM job's first request came 13.5 s after the start
without bytecode, 7.1 s with it; the plain loop's 2.2 and 1.1 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: How often the output folder is looked at for the first file (cheap).
POLL_S = 0.2
#: How often the process tree's memory is read (see the module docstring: not cheap), after
#: ``MEMORY_DENSE_S`` seconds sampled every ``POLL_S`` (so that a process of a second is seen).
MEMORY_SAMPLE_S = 1.0
MEMORY_DENSE_S = 3.0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children, tree, todo = _children_map(), [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process (RSS where smaps_rollup is unavailable)."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def process_name(pid: int) -> str:
    """A short name: Ray's worker title (``ray::MapWorker...``) or the executable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0][:40]
    name = os.path.basename(first)
    if name.startswith("python") and len(argv) > 1:
        script = next((a.decode() for a in argv[1:] if a and not a.startswith(b"-")), "")
        name = f"python {os.path.basename(script)}"
    return name[:40]


def compile_bytecode(pythons: list[str], folders: list[Path]) -> None:
    """Byte-compile the installed packages of each Python in ``pythons``, and ``folders`` (the
    project's own packages) with this one, in parallel, as ``pip install`` does; quick when
    already done. Prints how long each took."""
    import sys

    for python in dict.fromkeys(pythons):
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        extra = [str(f) for f in folders] if python == sys.executable else []
        started = time.perf_counter()
        subprocess.run(
            [python, "-m", "compileall", "-q", "-j", "0", purelib, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        print(f"bytecode of {python}'s packages: {time.perf_counter() - started:.1f} s", flush=True)


def load_average() -> float:
    """The 1-minute load average of this machine."""
    return os.getloadavg()[0]


@dataclass
class Measurement:
    """What one run of one variant gave."""

    variant: str
    rc: int
    wall_s: float
    peak_bytes: int
    first_output_s: float | None
    #: Process name -> bytes (PSS) when the tree's total peaked.
    peak_breakdown: dict[str, int] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    load_before: float = 0.0
    load_after: float = 0.0
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` now (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _first_parquet(folder: Path) -> bool:
    for _, _, files in os.walk(folder):
        if any(name.endswith(".parquet") for name in files):
            return True
    return False


def run_measured(
    variant: str,
    cmd: list[str],
    watch: Path | None,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600,
    cwd: Path | None = None,
) -> Measurement:
    """Run ``cmd``; watch ``watch`` (a folder) for the first Parquet file it writes.

    Ray is told to spill objects into ``watch/spill`` (``RAY_object_spilling_config``), whose
    largest size during the run is reported as ``spilled_mib``.
    """
    load_before = load_average()
    spill = (watch or Path(os.getcwd())) / "spill"
    env = {
        "RAY_object_spilling_config": json.dumps(
            {"type": "filesystem", "params": {"directory_path": str(spill)}}
        ),
        **(env or {}),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak, first_output, done, spilled = 0, None, threading.Event(), 0
    breakdown: dict[str, int] = {}

    def sample_memory() -> None:
        nonlocal peak, breakdown, spilled
        spilled = max(spilled, folder_bytes(spill))
        sizes = [(pid, pss_bytes(pid)) for pid in process_tree(proc.pid)]
        total = sum(size for _, size in sizes)
        if total > peak:
            peak, breakdown = total, {}
            for pid, size in sizes:
                name = process_name(pid)
                breakdown[name] = breakdown.get(name, 0) + size

    def sample() -> None:
        nonlocal first_output
        memory_due = 0.0
        while not done.is_set():
            now = time.perf_counter()
            if now >= memory_due:
                sample_memory()
                dense = now - started < MEMORY_DENSE_S
                memory_due = now + (POLL_S if dense else MEMORY_SAMPLE_S)
            if first_output is None and watch is not None and _first_parquet(watch):
                first_output = time.perf_counter() - started
            done.wait(POLL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        output, _ = proc.communicate()
        output += f"\n[benchmark] killed after {timeout_s:.0f} s"
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    bench: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith("BENCH "):
            bench = json.loads(line[len("BENCH ") :])
    bench["spilled_mib"] = spilled / 2**20  # the most Ray had spilled to disk at once
    if "first_row_at" in bench:  # written by the process itself (the plain loop)
        first_output = bench["first_row_at"] - (time.time() - (time.perf_counter() - started))
    return Measurement(
        variant=variant,
        rc=proc.returncode,
        wall_s=wall,
        peak_bytes=peak,
        first_output_s=first_output,
        peak_breakdown=breakdown,
        bench=bench,
        load_before=load_before,
        load_after=load_average(),
        tail="\n".join(output.splitlines()[-15:]),
    )


def _kill_tree(pid: int) -> None:
    """Stop a timed-out run and everything it started (its own process tree only)."""
    import signal

    for child in reversed(process_tree(pid)):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
