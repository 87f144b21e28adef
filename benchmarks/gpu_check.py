"""GPU check: the default embedding job and the tiny GPT-2 job on one GPU, against the CPU.

Run on a machine with one NVIDIA GPU and a CUDA build of torch, from the repository root::

    python benchmarks/gpu_check.py            # about 1-3 minutes on one H100 with 16 cores
    python benchmarks/gpu_check.py --json results.json

Everything it needs is in the repository: the shipped sample sentences (repeated to make the
data set larger), the packaged all-MiniLM-L6-v2, and a tiny GPT-2 it builds itself. Each job runs
through the real pipeline (``run_with_overrides``) on one local Ray started once; the GPU runs set
``predictor.stage.num_gpus=1`` (so the model goes on the GPU Ray assigns to the actor), the CPU
runs give the actors CPUs instead. It prints rows/s per job (job time without Ray start-up, with
the model load) and exits non-zero if any job failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _write_texts(path: Path, rows: int) -> Path:
    """The shipped sample sentences, repeated to ``rows`` rows, as JSON lines (id, text)."""
    samples = ROOT / "pipeline" / "samples" / "sample_texts.jsonl"
    texts = [json.loads(line)["text"] for line in samples.read_text().splitlines() if line]
    with path.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")
    return path


def _cpu_stage(cpus: int) -> list[str]:
    per_actor = max(0.5, (cpus - 2) // 2)  # two actors, two CPUs left for reading and writing
    return [
        "predictor.stage.num_gpus=0",
        "predictor.stage.concurrency=2",
        f"predictor.stage.num_cpus={per_actor}",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the four jobs and print a table of rows/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-rows", type=int, default=20000, help="rows for the embedding job")
    parser.add_argument("--gpt2-rows", type=int, default=2000, help="rows for the GPT-2 job")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--cpu-only", action="store_true", help="only the CPU jobs (to try the script anywhere)"
    )
    args = parser.parse_args(argv)

    import ray
    import torch

    if not args.cpu_only and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here (a CPU-only torch build?); try --cpu-only")
        return 2
    gpu_name = "none" if args.cpu_only else torch.cuda.get_device_name(0)
    print(f"GPU: {gpu_name}; torch {torch.__version__}; CPUs: {os.cpu_count()}")

    from pipeline.__main__ import run_with_overrides
    from tools.tiny_models import build_gpt2

    work = Path(tempfile.mkdtemp(prefix="bulkinfer-gpu-check-"))
    gpt2 = build_gpt2(work / "tiny-gpt2")
    embed_data = _write_texts(work / "embed.jsonl", args.embed_rows)
    gpt2_data = _write_texts(work / "gpt2.jsonl", args.gpt2_rows)
    cpus = os.cpu_count() or 4
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    print(f"Ray resources: {ray.cluster_resources()}")

    embed = [
        "source=json",
        f"source.params.path={embed_data}",
        "predictor=sentence_embedding",
        "predictor.stage.batch_size=512",
    ]
    generate = [
        "source=json",
        f"source.params.path={gpt2_data}",
        "predictor=hf_pipeline",
        f"predictor.params.model={gpt2}",
        "predictor.params.call_kwargs={max_new_tokens:16,do_sample:false}",
        "predictor.params.batch_size=64",
        "predictor.stage.batch_size=256",
    ]
    gpu = ["predictor.stage.num_gpus=1", "predictor.stage.concurrency=1"]
    jobs = [
        ("embedding (MiniLM)", "gpu", embed + gpu),
        ("embedding (MiniLM)", "cpu", embed + _cpu_stage(cpus)),
        ("tiny GPT-2 generation", "gpu", generate + gpu),
        ("tiny GPT-2 generation", "cpu", generate + _cpu_stage(cpus)),
    ]
    if args.cpu_only:
        jobs = [job for job in jobs if job[1] == "cpu"]
    results = []
    for n, (name, device, overrides) in enumerate(jobs):
        sink = [f"sink.params.path={work}/out-{n}", "run.progress=false"]
        started = time.perf_counter()
        try:
            result = run_with_overrides(overrides + sink)
            row = {
                "job": name,
                "device": device,
                "rows": result.rows_out,
                "job_s": round(result.job_s, 2),
                "rows_per_s": round(result.rows_per_s or 0.0, 1),
            }
        except Exception as exc:  # report and go on with the other jobs
            row = {"job": name, "device": device, "error": f"{type(exc).__name__}: {exc}"[:500]}
        row["wall_s"] = round(time.perf_counter() - started, 2)
        row["settings"] = [o for o in overrides if "stage" in o or "batch_size" in o]
        results.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{'job':<24}{'device':<8}{'rows':>8}{'job s':>9}{'rows/s':>11}")
    for row in results:
        if "error" in row:
            print(f"{row['job']:<24}{row['device']:<8}  failed: {row['error'][:80]}")
        else:
            print(
                f"{row['job']:<24}{row['device']:<8}{row['rows']:>8}{row['job_s']:>9.1f}"
                f"{row['rows_per_s']:>11,.1f}"
            )
    target = args.json
    if target is None and os.environ.get("OUT"):
        target = os.path.join(os.environ["OUT"], "gpu_check.json")
    if target:
        Path(target).write_text(json.dumps(results, indent=2))
    ray.shutdown()
    return 1 if any("error" in row for row in results) else 0


if __name__ == "__main__":
    sys.exit(main())
