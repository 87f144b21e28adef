"""An LLM job killed half-way pays again only for what was in flight: 3,000 prompts in one
Parquet file through ``openai_chat`` (the command line, in its own process session) against a
loopback server that answers after a log-normal wait and counts every request; the driver and
its Ray are killed with SIGKILL once half the prompts were answered, and ``run.resume=true``
finishes the job."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from contracts import run_killed_when
from latency_server import Latency, LatencyServer

pytestmark = pytest.mark.subprocess

N = 3000
SLOTS = 32


def _args(server: LatencyServer, inp: Path, out: Path, *extra: str) -> list[str]:
    return [
        "source=parquet",
        f"source.params.path={inp}",
        "predictor=openai_chat",
        f"predictor.params.base_url={server.base_url}",
        "predictor.params.model=latency-model",
        f"predictor.params.max_concurrent_requests={SLOTS}",
        f"sink.params.path={out}",
        "run.progress=false",
        "ray.num_cpus=2",
        f"hydra.run.dir={out.parent / 'runs'}",
        *extra,
    ]


def test_a_killed_llm_job_resumes_sending_at_most_the_requests_that_were_in_flight(tmp_path):
    inp, out = tmp_path / "prompts.parquet", tmp_path / "out"
    texts = [f"prompt number {i}" for i in range(N)]
    pq.write_table(pa.table({"id": list(range(N)), "text": texts}), inp)
    latency = Latency(median_s=0.05, sigma=0.9, min_s=0.01, max_s=1.0)
    with LatencyServer(latency) as server:
        run_killed_when(
            _args(server, inp, out),
            lambda: len(server.snapshot()["by_prompt"]) >= N // 2,
            "half the prompts were answered",
            timeout_s=300,
        )
        assert not out.exists(), "a killed run publishes nothing"
        first = server.snapshot()
        assert N // 2 <= len(first["by_prompt"]) < N

        resumed = run_cli(*_args(server, inp, out, "run.resume=true"), timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        total = server.snapshot()

    table = pq.read_table(out).sort_by("id")
    assert table.column("id").to_pylist() == list(range(N)), "every row exactly once"
    assert table.column("output").to_pylist() == [f"answer to {t}" for t in texts]
    # Every prompt was answered; the only prompts sent twice are those in flight at the kill
    # (at most SLOTS) and those whose answer had arrived in the instant before it but was not
    # yet in the journal (a worker thread writes each answer as it arrives: one CI run saw one
    # such prompt). Without the journal a resumed run sends about N / 2 again.
    assert set(total["by_prompt"]) == set(texts)
    assert N <= total["requests"] <= N + 2 * SLOTS, total["requests"]
    # ...and the resumed run's line says how many it did not send.
    assert "rows answered without a request of their own" in resumed.stdout
