"""The stage wrapper runs a plugin in a process where Ray cannot be imported.

``benchmarks/gpu_check.py`` calls the predictors through
:class:`pipeline.execute.stage_call.StageCall` (and the error guard around it) on machines that have
torch but no Ray, so neither module may import Ray unless a ledger actor is given. The check runs in
a fresh interpreter whose import system refuses ``ray``, as a machine without it would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT

#: Makes ``import ray`` (and any ``ray.*``) fail in the interpreter that runs it first.
BLOCK_RAY = """
import importlib.abc
import sys

class NoRay(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoRay())
"""

#: A predictor that runs out of memory on calls of more than 8 rows, through StageCall with
#: batch_size auto, inside the error guard, with no ledger.
SCRIPT = """
import json
import sys

try:
    import ray  # noqa: F401
    raise SystemExit("ray was importable")
except ModuleNotFoundError:
    pass

import pyarrow as pa
from pydantic import Field

from pipeline.execute.guard import GuardedActor, StageGuard
from pipeline.contract import PluginParams, Predictor
from pipeline.execute.stage_call import StageCall


class Double(Predictor):
    class Params(PluginParams):
        limit: int = Field(default=8)

    def __init__(self, params):
        super().__init__(params)
        self.calls = []

    def __call__(self, batch):
        self.calls.append(batch.num_rows)
        if batch.num_rows > self.params.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.append_column("double", pa.compute.multiply(batch.column("x"), 2))


def build(params):
    return StageCall(Double, params, key="predictor", ledger=None, eager=True, num_threads=1)


actor = GuardedActor(build, Double.Params(), StageGuard("predictor", "double"))
out = actor(pa.table({"x": list(range(20))}))
call = actor._guarded.stage
print(json.dumps({
    "double": out.column("double").to_pylist(),
    "limit": call.batches.limit,
    "calls": call._instance().calls,
    "ray_loaded": "ray" in sys.modules,
}))
"""


def test_stage_call_builds_and_halves_batches_without_ray():
    code = BLOCK_RAY + textwrap.dedent(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["double"] == [2 * x for x in range(20)]
    assert result["limit"] == 5  # 20 -> 10 -> 5 rows: the largest half that fitted
    assert result["calls"][0] == 20 and max(result["calls"][1:]) <= 10
    assert result["ray_loaded"] is False


def test_blocked_interpreter_really_has_no_ray():
    """The blocker itself works (else the test above would prove nothing)."""
    code = BLOCK_RAY + "import ray\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "No module named 'ray'" in done.stderr
