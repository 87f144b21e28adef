"""Test-only halt points: a staged job stops at a named step so a test can kill it exactly there.

With ``BULKINFER_TEST_HALT=<point>:<file>`` in its environment, the process that reaches
``<point>`` (the driver, or a write task in a Ray worker, which inherits the driver's
environment) creates ``<file>`` and then waits until it is killed or ``<file>`` is removed. A
test starts the job, waits for ``<file>`` and SIGKILLs the job's processes (or presses Ctrl-C:
the wait ends with ``KeyboardInterrupt`` where Ctrl-C interrupts, or goes on until the test
removes the file): the job stops at that step and nowhere else, without depending on timing.
Without the variable (every real run) a halt point does nothing.

The job's own steps call :func:`halt` in the core; a sink's target may call it inside its
publish (``committing``), the only point a plugin marks (contract 1.5).

The points, in the order a job reaches them:

``written``
    a write task has written its rows into the staging (files, or a table target's staged
    rows) and not yet recorded them: no record of it exists.
``recorded``
    a write task has recorded its rows (half way through the job: its record counts, the
    tasks after it are in flight or not started).
``renaming``
    a file output's publish has moved its first recorded file towards the final path and not
    the others; the job's state is not yet ``publishing``.
``publishing``
    every part is recorded and the job's state is ``publishing``; nothing is in place at the
    destination (a file output: its manifest is written in the staging; a table: the target's
    commit has not started).
``committing``
    a table target's publish is inside its one commit (the SQL target: its rows inserted into
    the table in a transaction not yet committed); a process killed there leaves the commit
    undone, and the resumed run publishes again.
``committed``
    a table target's commit is made and the job's record still says ``publishing`` (a
    resumed run must find that commit and not make it again).
``published``
    the output is published and its job record gone (the driver, before it releases the job's
    workers): the job is done, whatever stops it now.
"""

from __future__ import annotations

import os
import time

#: The environment variable naming a halt point and the file to create there.
HALT_ENV = "BULKINFER_TEST_HALT"
#: The halt points (see the module docstring).
POINTS = (
    "written",
    "recorded",
    "renaming",
    "publishing",
    "committing",
    "committed",
    "published",
)


def halt(point: str) -> None:
    """Stop here while ``BULKINFER_TEST_HALT`` names ``point`` and its file exists (test-only).

    ``point``: one of :data:`POINTS`. Returns at once when the variable is unset or names
    another point; otherwise creates the file the variable names and returns once that file is
    removed (raises OSError when it cannot be created).
    """
    value = os.environ.get(HALT_ENV)
    if not value or value.partition(":")[0] != point:
        return
    flag = value.partition(":")[2]
    with open(flag, "a"):
        pass
    while os.path.exists(flag):
        time.sleep(0.05)
