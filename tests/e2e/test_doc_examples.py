"""Every shell example of README.md and docs/*.md runs from the installed wheel in an empty folder.

A page is read as a script: its fenced ``bash`` blocks run in order, each with ``bash -euo
pipefail``, in a folder that starts empty (one per page), with the wheel's commands
(``bulkinfer``, ``bulkinfer-plugins``, ``bulkinfer-samples``) first on ``PATH`` (see
``tests/wheel_env.py``: bulkinfer from its wheel, the other packages of this environment).
Nothing may reach a model hub, so ``HF_HUB_OFFLINE=1``. A block passes when it exits 0 and
prints no Python traceback; background processes a block starts (``transformers serve ... &``)
are stopped when its page ends.

Only the blocks listed in :data:`SKIPPED` do not run, each for one of :data:`REASONS`.

Cost: a command that depends on nothing but the installed packages (``bulkinfer``,
``bulkinfer run.dry_run=true``, ``bulkinfer-plugins list``: no file, preset or config folder of
the page; :data:`CONTEXT_FREE`) runs once, where it first appears; a later page that shows it
again is told it ran. Every other command runs on every page that shows it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from wheel_env import ROOT, build_wheel, clean_env, make_env

# Collected early (tests/e2e), so that pytest-xdist starts this long module while the other
# worker runs the many short ones.
pytestmark = [pytest.mark.packaging, pytest.mark.subprocess]

#: Why a block may not run here, and what each reason means.
REASONS = {
    "cluster": "needs a Ray cluster of several nodes, Kubernetes or Docker",
    "gpu": "needs a GPU",
    "network": "needs the network: a package index, a model hub, a remote store or database",
    "clone": "a developer's command on a clone of the repository (install it, run its tests, "
    "build its site, install its example packages)",
}
#: (page, text that occurs in exactly one of its bash blocks) -> "reason: what it needs".
SKIPPED = {
    ("README.md", "--extra-index-url https://download.pytorch.org/whl/cpu\n"): "network: the index",
    ("README.md", 'pip install "bulkinfer[embeddings]"\n'): "network: installs from the index",
    ("README.md", '-c "$(bulkinfer-plugins constraints)"'): "network: installs from the index",
    ("README.md", 'pip install -c constraints.txt -e ".[all,test]"'): "clone: the editable install",
    ("README.md", "python -m pytest -q"): "clone: the test suite",
    ("README.md", "vllm serve meta-llama/Llama-3.1-8B-Instruct"): "gpu: vLLM serving an 8B model",
    ("README.md", "postgresql+psycopg://bulkinfer@db:5432/ml"): "network: a PostgreSQL server",
    ("README.md", "ray job submit"): "cluster: a Ray cluster and its Jobs API",
    ("README.md", "pip install ./examples/bulkinfer-lexicon"): "clone: the example packages",
    (
        "docs/index.md",
        "--extra-index-url https://download.pytorch.org/whl/cpu",
    ): "network: the index",
    ("docs/index.md", 'pip install "bulkinfer[embeddings]"\n'): "network: installs from the index",
    ("docs/index.md", 'pip install -e ".[docs]"'): "clone: builds the site of a clone",
    ("docs/clusters.md", "ray start --head --port=6379"): "cluster: ray start on each node",
    ("docs/clusters.md", "ray://HEAD_IP:10001"): "cluster: Ray Client to a remote cluster",
    ("docs/clusters.md", "ray.address=10.0.0.5:6379"): "cluster: a sweep on a cluster",
    ("docs/clusters.md", "export RAY_ADDRESS=http://HEAD_IP:8265"): "cluster: the Jobs API",
    ("docs/clusters.md", "--runtime-env-json"): "cluster: the Jobs API",
    ("docs/clusters.md", "kubectl apply"): "cluster: Docker, a registry and Kubernetes",
    ("docs/config-packages.md", "pip install ./examples/bulkinfer-lexicon"): "clone: examples",
    ("docs/llm.md", "vllm serve meta-llama/Llama-3.1-8B-Instruct"): "gpu: vLLM serving an 8B model",
    (
        "docs/models.md",
        "+experiment=quickstart_gpu",
    ): "gpu: two GPUs, then one (and the hub's GPT-2)",
    ("docs/plugins.md", "pip install ./examples/bulkinfer-lexicon"): "clone: the example package",
    ("docs/sinks.md", "postgresql+psycopg://bulkinfer@db:5432/ml"): "network: a PostgreSQL server",
}
#: A command that depends on nothing but the installed packages: ``bulkinfer`` or
#: ``bulkinfer-plugins`` with flags and ``key=value`` overrides whose values hold no path.
CONTEXT_FREE = re.compile(
    r"(bulkinfer|bulkinfer-plugins)"
    r"(\s+(-m|--help|--info\s+searchpath|list|describe\s+[\w/]+|[a-z][\w.]*=[\w.,:-]+))*"
)
#: Longest a block may run (a few jobs, each starting Ray and loading a model).
BLOCK_TIMEOUT_S = 900
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$", re.M | re.S
)


@dataclass(frozen=True)
class Example:
    """One fenced bash block of a page."""

    page: str
    line: int
    text: str

    @property
    def skipped(self) -> str | None:
        """Why it does not run here, or None."""
        found = [
            why for (pg, mark), why in SKIPPED.items() if pg == self.page and mark in self.text
        ]
        return found[0] if found else None


def examples(page: str) -> list[Example]:
    """The page's bash blocks, in order, with their first line's number."""
    text = (ROOT / page).read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group("lang") != "bash":
            continue
        indent = len(match.group("indent"))
        body = "".join(line[indent:] for line in match.group("body").splitlines(keepends=True))
        found.append(Example(page, text.count("\n", 0, match.start()) + 2, body))
    return found


def test_every_skipped_block_is_there_once_and_for_a_known_reason():
    for (page, mark), why in SKIPPED.items():
        reason = why.split(":")[0]
        assert reason in REASONS, f"{page}: {why!r} is not one of {sorted(REASONS)}"
        matches = [e for e in examples(page) if mark in e.text]
        assert len(matches) == 1, f"{page}: {mark!r} is in {len(matches)} bash blocks, not 1"


def test_the_examples_that_run_use_every_command_of_the_wheel():
    running = "\n".join(e.text for page in PAGES for e in examples(page) if not e.skipped)
    for command in ("bulkinfer ", "bulkinfer-plugins ", "bulkinfer-samples "):
        assert f"\n{command}" in f"\n{running}", command
    assert len([e for page in PAGES for e in examples(page) if not e.skipped]) >= 20


def _commands(text: str) -> list[str]:
    """The block's one-line commands (comments dropped); none for a block with a here-doc."""
    if "<<" in text:
        return []
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        joined = line.rstrip().endswith("\\") or (i and lines[i - 1].rstrip().endswith("\\"))
        command = line.split(" #")[0].strip()
        if command and not command.startswith("#") and not joined:
            found.append(command)
    return found


def _without_repeats(text: str, ran: set[str]) -> str:
    """``text`` with each context-free command that already ran replaced by a note."""
    out = []
    for line in text.splitlines():
        command = line.split(" #")[0].strip()
        if command in ran and CONTEXT_FREE.fullmatch(command):
            line = f"echo {shlex.quote('(ran on an earlier page: ' + command + ')')}"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("doc-wheel")
    return make_env(build_wheel(work), work)


@pytest.fixture(scope="module")
def shell_env(wheel_env) -> dict[str, str]:
    """The wheel's commands first on PATH, then this environment's (``transformers serve``)."""
    env = clean_env(wheel_env)
    env["PATH"] = os.pathsep.join(
        [str(wheel_env / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    )
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ran() -> set[str]:
    """Context-free commands that ran (and passed) on an earlier page of this module."""
    return set()


class CpuMeter(threading.Thread):
    """CPU seconds (user + system) of every process of a session: a block's bash and all it
    starts, Ray's daemons and workers included (they keep the session; Ray only changes their
    process group). Sampled from ``/proc`` every half second, so a process that lives less than
    that is missed; None where there is no ``/proc``."""

    def __init__(self, session: int) -> None:
        super().__init__(daemon=True)
        self.session = session
        self.ticks: dict[tuple[str, str], int] = {}  # (pid, start time) -> utime + stime
        self.done = threading.Event()

    def sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.session:  # state ppid pgrp session ... (proc(5))
                key = (entry.name, fields[19])
                self.ticks[key] = max(self.ticks.get(key, 0), int(fields[11]) + int(fields[12]))

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    def stop(self) -> float | None:
        self.done.set()
        self.join()
        if not os.path.isdir("/proc"):
            return None
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")


def _stop(groups: list[int]) -> None:
    """Stop what the page's blocks left running (their process groups): TERM, then KILL what
    is still there after 5 s."""
    alive = []
    for group in groups:
        try:
            os.killpg(group, signal.SIGTERM)
            alive.append(group)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [g for g in alive if _group_alive(g)]
    for group in alive:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(3600)  # a page runs block after block (README.md: 15 min at load 20)
@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_the_page_run_from_the_wheel(page, tmp_path, shell_env, ran):
    folder = tmp_path / "work"
    folder.mkdir()
    groups: list[int] = []
    timings = []
    try:
        for example in examples(page):
            if example.skipped:
                continue
            started = time.perf_counter()
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", _without_repeats(example.text, ran)],
                cwd=folder,
                env=shell_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            groups.append(process.pid)
            meter = CpuMeter(process.pid)  # the block's session: its bash is the leader
            meter.start()
            try:
                output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _stop([process.pid])
                output, _ = process.communicate()
            seconds, cpu = time.perf_counter() - started, meter.stop()
            timings.append(
                f"{page}:{example.line}: {seconds:.1f} s, {cpu or 0:.1f} CPU-s "
                f"(load {os.getloadavg()[0]:.1f})"
            )
            where = f"{page}, the bash block at line {example.line}:\n{example.text}"
            assert process.returncode == 0, f"{where}\nexit {process.returncode}:\n{output[-6000:]}"
            assert "Traceback (most recent call last)" not in output, f"{where}\n{output[-6000:]}"
            ran.update(c for c in _commands(example.text) if CONTEXT_FREE.fullmatch(c))
    finally:
        _stop(groups)
        print("\n".join(timings))
