"""openai_chat against the plain asyncio + ``openai`` loop, on the same server and prompts.

    python -m benchmarks.llm                                   # tiny chat model, transformers serve
    python -m benchmarks.llm --rows 400 --rounds 5 --concurrency 16
    python -m benchmarks.llm --base-url http://127.0.0.1:8000/v1 --model NAME   # a running server
    python -m benchmarks.llm --latency --rows 4000 --concurrency 32 --batch-sizes default,32

``--latency`` starts the loopback server of ``tests/latency_server.py`` instead: it answers each
prompt after a log-normal, prompt-dependent wait (``--median-s``, ``--sigma``, cut to
``[--min-s, --max-s]``) and uses no CPU, as a remote GPU server looks to a client; the table then
gives the ideal job time (the waits summed over the request slots) and the server's peak count of
requests in flight for each run. ``--batch-sizes`` runs bulkinfer once per
``predictor.stage.batch_size`` (``default``: the plugin's), each against the same plain script.

Without ``--base-url`` it builds the tiny chat GPT-2 (``plugins/samples/models.py``, once, into
``$BULKINFER_BENCH_DATA``, default ``~/.cache/bulkinfer-bench``) and starts
``transformers serve`` on it (``tests/llm_server.py``), on this machine's CPU. Both variants
send one chat request per row of the same Parquet file, with the same prompt template,
``max_tokens``, ``temperature: 0`` and requests in flight. Each run is its own process, measured
from outside (``benchmarks/measure.py``); variants alternate in an order that rotates each
round, and the 1-minute load average is recorded before each run. Figures are medians: rows/s
and completion tokens/s over the whole process and over the job alone (the variant's own
clock: bulkinfer's ``metrics.json``, the loop's ``BENCH`` line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.measure import compile_bytecode, run_measured
from benchmarks.run import (
    ENV,
    PACKAGES,
    PY,
    ROOT,
    SCRIPTS,
    machine,
    output_rows,
    wait_for_quiet,
)

PROMPT = "Label the sentiment of: {text}"
TOPICS = ["the film", "the service", "a long wait", "the new phone", "this book", "the weather"]


def prompts_file(rows: int) -> Path:
    """``rows`` texts of 4-40 words (deterministic), as Parquet in the benchmark data folder."""
    import pyarrow as pa

    path = data.cache_dir() / f"llm-prompts-{rows}.parquet"
    if not path.exists():
        texts = [
            f"row-{i}: {TOPICS[i % len(TOPICS)]} was " + " ".join(["quite good"] * (2 + i % 19))
            for i in range(rows)
        ]
        data._atomic_write(pa.table({"id": list(range(rows)), "text": texts}), path)
    return path


def tiny_server(continuous_batching: bool):
    """``transformers serve`` on the tiny chat model (built once)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from llm_server import start_server

    from plugins.samples.models import build_gpt2_chat

    model = data.cache_dir() / "tiny-gpt2-chat"
    if not (model / "config.json").exists():
        build_gpt2_chat(model)
    return start_server(model, continuous_batching=continuous_batching)


PLAIN = "plain asyncio + openai"


def commands(args: argparse.Namespace, source: Path) -> dict[str, Any]:
    """Variant name -> (output folder -> command)."""

    def bulkinfer(out: Path, batch_size: str = "default") -> list[str]:
        extra = [] if batch_size == "default" else [f"predictor.stage.batch_size={batch_size}"]
        return [
            PY,
            "-m",
            "pipeline",
            "source=parquet",
            f"source.params.path={source}",
            "predictor=openai_chat",
            f"predictor.params.base_url={args.base_url}",
            f"predictor.params.model={args.model}",
            f"predictor.params.prompt='{PROMPT}'",
            f"predictor.params.max_tokens={args.max_tokens}",
            "predictor.params.temperature=0",
            f"predictor.params.max_concurrent_requests={args.concurrency}",
            "run.progress=false",
            f"sink.params.path={out}/predictions",
            f"hydra.run.dir={out}/hydra",
            *extra,
        ]

    def plain(out: Path) -> list[str]:
        return [
            PY,
            str(SCRIPTS / "plain_openai.py"),
            str(source),
            f"{out}/predictions",
            f"--base-url={args.base_url}",
            f"--model={args.model}",
            f"--prompt={PROMPT}",
            f"--max-tokens={args.max_tokens}",
            f"--concurrency={args.concurrency}",
        ]

    variants: dict[str, Any] = {}
    for size in args.batch_sizes.split(","):
        name = "bulkinfer" if size == "default" else f"bulkinfer batch_size={size}"
        variants[name] = lambda out, size=size: bulkinfer(out, size)
    variants[PLAIN] = plain
    return variants


def figures(name: str, out: Path, bench: dict[str, Any]) -> dict[str, Any]:
    """job_s and completion tokens of one run, from the variant's own report."""
    if name.startswith("bulkinfer"):
        metrics = json.loads((out / "hydra" / "metrics.json").read_text())
        counters = metrics["counters"]["predictor"]
        return {
            "job_s": metrics["job_s"],
            "completion_tokens": counters["completion_tokens"],
            "requests": counters["requests"],
        }
    return {
        "job_s": bench["job_s"],
        "completion_tokens": bench["completion_tokens"],
        "requests": bench["rows"],
    }


def run(args: argparse.Namespace, server: Any = None) -> list[dict[str, Any]]:
    source = prompts_file(args.rows)
    variants = commands(args, source)
    names = list(variants)
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            wait_for_quiet(args.max_load, args.wait)
            if hasattr(server, "reset"):
                server.reset()
            with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
                out = Path(tmp)
                m = run_measured(name, variants[name](out), out, ENV, args.timeout, ROOT)
                rows = output_rows(out / "predictions") if m.ok else 0
                record = {"variant": name, "ok": m.ok and rows == args.rows, "wall_s": m.wall_s}
                record["load"] = m.load_before
                if record["ok"]:
                    record.update(figures(name, out, m.bench))
                if hasattr(server, "snapshot"):
                    record["peak_in_flight"] = server.snapshot()["peak_in_flight"]
                    record["server_requests"] = server.snapshot()["requests"]
            runs.append(record)
            status = "ok" if record["ok"] else "FAILED\n" + m.tail
            print(
                f"  [round {round_ + 1}/{args.rounds}] {name}: {m.wall_s:.1f} s, "
                f"load {m.load_before:.2f} {status}",
                flush=True,
            )
    return runs


def summarize(runs: list[dict[str, Any]], rows: int, ideal_s: float | None = None) -> str:
    """A Markdown table of medians (with the server's peak in-flight requests where known),
    each bulkinfer variant's speed as a ratio of the plain loop's, and every run's wall time
    and load. ``ideal_s``: the shortest possible job time (the latency server's)."""
    peak = any("peak_in_flight" in r for r in runs)
    lines = [
        "| variant | runs | wall s | job s | rows/s (whole) | rows/s (job) | completion "
        "tokens/s (whole) | completion tokens/s (job) |" + (" peak in flight |" if peak else ""),
        "|" + " --- |" * (9 if peak else 8),
    ]
    medians: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        good = [r for r in runs if r["variant"] == name and r["ok"]]
        if not good:
            lines.append(f"| {name} | 0/{len([r for r in runs if r['variant'] == name])} |")
            continue
        med = {
            key: statistics.median(r[key] for r in good)
            for key in ("wall_s", "job_s", "completion_tokens")
        }
        med["rows_whole"] = statistics.median(rows / r["wall_s"] for r in good)
        med["rows_job"] = statistics.median(rows / r["job_s"] for r in good)
        med["tok_whole"] = statistics.median(r["completion_tokens"] / r["wall_s"] for r in good)
        med["tok_job"] = statistics.median(r["completion_tokens"] / r["job_s"] for r in good)
        medians[name] = med
        total = len([r for r in runs if r["variant"] == name])
        row = (
            f"| {name} | {len(good)}/{total} | {med['wall_s']:.1f} | {med['job_s']:.1f} | "
            f"{med['rows_whole']:.1f} | {med['rows_job']:.1f} | {med['tok_whole']:.0f} | "
            f"{med['tok_job']:.0f} |"
        )
        if peak:
            row += f" {max(r.get('peak_in_flight', 0) for r in good)} |"
        lines.append(row)
    lines.append("")
    if ideal_s:
        lines.append(f"Ideal job time (the server's waits over the request slots): {ideal_s:.1f} s")
    plain = medians.get(PLAIN)
    for name, bulk in medians.items():
        if name == PLAIN or plain is None:
            continue
        lines.append(
            f"{name} / plain loop: rows/s {bulk['rows_whole'] / plain['rows_whole']:.2f}x "
            f"(whole process), {bulk['rows_job'] / plain['rows_job']:.2f}x (job)"
        )
    lines.append("")
    for name in medians:
        walls = [round(r["wall_s"], 1) for r in runs if r["variant"] == name]
        loads = [round(r["load"], 2) for r in runs if r["variant"] == name]
        lines.append(f"- {name}: wall {walls} s; load before each run {loads}")
    return "\n".join(lines)


def latency_server(args: argparse.Namespace):
    """The loopback latency server (``tests/latency_server.py``), started."""
    sys.path.insert(0, str(ROOT / "tests"))
    from latency_server import MODEL, Latency, LatencyServer

    latency = Latency(args.median_s, args.sigma, args.min_s, args.max_s)
    server = LatencyServer(latency)
    server.start()
    server.model = MODEL
    return server


def ideal(args: argparse.Namespace, source: Path) -> float:
    import pyarrow.parquet as pq
    from latency_server import Latency, ideal_seconds

    texts = pq.read_table(source, columns=["text"]).column("text").to_pylist()
    latency = Latency(args.median_s, args.sigma, args.min_s, args.max_s)
    return ideal_seconds([PROMPT.format(text=t) for t in texts], latency, args.concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch-sizes", default="default", help="bulkinfer's, comma-separated")
    parser.add_argument("--base-url", default=None, help="a running server (else: start one)")
    parser.add_argument("--model", default=None, help="the model name that server knows")
    parser.add_argument("--continuous-batching", action="store_true", help="the started server")
    parser.add_argument("--latency", action="store_true", help="start the latency server")
    parser.add_argument("--median-s", type=float, default=0.4)
    parser.add_argument("--sigma", type=float, default=0.9)
    parser.add_argument("--min-s", type=float, default=0.1)
    parser.add_argument("--max-s", type=float, default=7.0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--max-load", type=float, default=None, help="wait for a quieter machine")
    parser.add_argument("--wait", type=float, default=600, help="longest wait for --max-load (s)")
    args = parser.parse_args(argv)
    compile_bytecode([PY], PACKAGES)
    server = None
    if args.latency:
        server = latency_server(args)
        args.base_url, args.model = server.base_url, server.model
    elif args.base_url is None:
        server = tiny_server(args.continuous_batching)
        args.base_url, args.model = server.base_url, server.model
    elif args.model is None:
        parser.error("--model is required with --base-url")
    try:
        print(f"LLM endpoint benchmark: {args.rows} rows, {args.rounds} rounds, {args.base_url}")
        runs = run(args, server)
    finally:
        if server is not None:
            server.stop()
    best = ideal(args, prompts_file(args.rows)) if args.latency else None
    print(f"\nMeasured on {machine()}.\n\n{summarize(runs, args.rows, best)}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
