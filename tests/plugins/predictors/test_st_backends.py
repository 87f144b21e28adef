"""sentence_embedding on ONNX Runtime and OpenVINO: the torch.onnx export and its cache, the
vectors against torch, ``backend: auto``.

The runtime tests run where the runtimes are installed (``pip install 'bulkinfer[onnx]'`` /
``'bulkinfer[openvino]'``, both in ``all``) and are skipped elsewhere; params, cache keys, the
choice rule and the missing-library errors are checked everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import ROOT
from pydantic import ValidationError

from pipeline.contract.errors import ConfigError
from plugins import embedding_export, st_backends
from plugins.embedding_export import cosine
from plugins.predictors.sentence_embedding import SentenceEmbedding, SentenceEmbeddingParams

HAS_ONNX = importlib.util.find_spec("onnxruntime") is not None
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnxruntime is not installed")
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")

SAMPLES = ROOT / "pipeline" / "samples" / "sample_texts.jsonl"


def _samples() -> list[str]:
    return [json.loads(line)["text"] for line in SAMPLES.read_text().splitlines() if line]


def _vectors(table: pa.Table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


# -- params -------------------------------------------------------------------------------------


def test_auto_is_the_default_and_every_backend_is_accepted():
    assert SentenceEmbeddingParams().backend == "auto"
    for backend in ("auto", "torch", "onnx", "openvino"):
        assert SentenceEmbeddingParams(backend=backend).backend == backend
    assert SentenceEmbeddingParams(backend="onnx", quantize="int8").quantize == "int8"
    assert SentenceEmbeddingParams(quantize="int8").backend == "auto"  # auto may weigh int8
    bf16 = SentenceEmbeddingParams(backend="openvino", model_dtype="bfloat16")
    assert bf16.model_dtype == "bfloat16"


@pytest.mark.parametrize(
    "params, words",
    [
        ({"backend": "tensorrt"}, ["backend", "auto", "torch", "onnx", "openvino"]),
        ({"backend": "torch", "quantize": "int8"}, ["quantize", "backend=onnx or auto"]),
        ({"backend": "openvino", "quantize": "int8"}, ["quantize", "backend=onnx or auto"]),
        ({"backend": "onnx", "quantize": "int4"}, ["quantize", "int8"]),
        ({"backend": "onnx", "model_dtype": "float16"}, ["model_dtype", "backend=torch"]),
        ({"backend": "openvino", "model_dtype": "float16"}, ["openvino takes bfloat16"]),
    ],
)
def test_bad_backend_params_are_refused(params, words):
    with pytest.raises(ValidationError) as error:
        SentenceEmbeddingParams(**params)
    for word in words:
        assert word in str(error.value)


def test_a_bad_backend_name_is_one_line_naming_the_key(cli):
    done = cli("predictor.params.backend=tensorrt", "run.dry_run=true")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bulkinfer: error: predictor.params.backend:")
    assert "'auto', 'torch', 'onnx' or 'openvino'" in lines[0]


# -- the cache and the check set (no model) -----------------------------------------------------


def test_cache_entries_differ_by_model_content_and_are_named_after_the_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1234")
    first = embedding_export.entry_name(embedding_export.export_key(str(model)))
    assert first == embedding_export.entry_name(embedding_export.export_key(str(model)))
    (model / "weights.bin").write_bytes(b"12345")
    changed = embedding_export.entry_name(embedding_export.export_key(str(model)))
    assert first != changed and first.startswith("model-onnx-")
    key = embedding_export.export_key(str(model))
    assert set(key["libraries"]) == set(embedding_export.EXPORT_DISTRIBUTIONS)


def test_auto_weighs_openvino_in_bfloat16_only_where_the_cpu_computes_in_it():
    with_unit = st_backends.candidates(None, {"avx512f", "avx512_bf16"})
    without = st_backends.candidates(None, {"avx512f", "avx2"})
    if HAS_OPENVINO:
        assert "openvino bf16" in with_unit and "openvino bf16" not in without
    assert "onnx int8" not in with_unit
    assert ("onnx int8" in st_backends.candidates("int8", set())) == HAS_ONNX
    for name in ("torch", "onnx int8", "openvino bf16", "openvino"):
        assert st_backends.candidate_name(*st_backends.parse_candidate(name)) == name


def test_int8_files_follow_the_processor():
    assert embedding_export.int8_config("aarch64", set()) == "arm64"
    flags = {"avx2", "avx512f", "avx512_vnni"}
    assert embedding_export.int8_config("x86_64", flags) == "avx512_vnni"
    assert embedding_export.int8_config("x86_64", {"avx2", "avx512f"}) == "avx512"
    assert embedding_export.int8_config("x86_64", {"avx2"}) == "avx2"


def test_the_check_texts_are_fixed_and_varied():
    texts = embedding_export.check_texts()
    assert texts == embedding_export.check_texts() and len(texts) == 64
    assert "" in texts and any("東京" in t for t in texts)
    assert max(len(t.split()) for t in texts) > 256  # some are truncated to max_seq_length


def test_cosine_counts_two_empty_vectors_as_equal_and_one_as_different():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine(a, b), [1.0, 1.0, 0.0, -1.0])


def test_auto_takes_the_fastest_backend_whose_vectors_match_torchs():
    figures = {
        "torch": {"rows_per_s": 100.0, "cosine_min": 1.0},
        "onnx": {"rows_per_s": 120.0, "cosine_min": 1.0},
        "openvino": {"rows_per_s": 130.0, "cosine_min": 1.0},
        "openvino bf16": {"rows_per_s": 250.0, "cosine_min": 0.99985},
        "onnx int8": {"rows_per_s": 180.0, "cosine_min": 0.98},
    }
    winner, reason = st_backends.pick(figures, 64, 1)
    assert winner == "onnx int8"  # int8 is judged against its own floor (asked for)
    assert "openvino bf16 (cosine 0.999850 < 0.9999)" in reason  # bf16 against float32's
    assert "rows per CPU second" in reason
    del figures["onnx int8"]
    assert st_backends.pick(figures, 64, 1)[0] == "openvino"
    figures["openvino bf16"]["cosine_min"] = 0.99995
    assert st_backends.pick(figures, 64, 2)[0] == "openvino bf16"
    del figures["openvino"], figures["openvino bf16"]
    assert st_backends.pick(figures, 64, 1)[0] == "onnx"
    figures["onnx"]["cosine_min"] = 0.5
    assert st_backends.pick(figures, 64, 1)[0] == "torch"


def test_concurrent_exports_make_one_entry_and_the_others_wait_for_it(tmp_path, monkeypatch):
    """Workers missing the entry at once: one exports under the lock, the others wait and read
    its entry; nothing else is left in the cache but the lock file."""
    calls: list[int] = []
    inside = threading.Event()

    def export(model: str, into: Path) -> None:
        calls.append(threading.get_ident())
        inside.set()
        (into / "model.onnx").write_text("graph")
        info = {
            "inputs": ["input_ids", "attention_mask"],
            "max_seq_length": 8,
            "dimension": 4,
            "pad_id": 0,
            "pad_token": "[PAD]",
            "pad_type_id": 0,
            "padding_side": "right",
            "truncation_side": "right",
            "cosine_min": 1.0,
        }
        threading.Event().wait(0.5)  # the others arrive while this one holds the lock
        (into / embedding_export.MARKER).write_text(json.dumps(info))

    monkeypatch.setattr(embedding_export, "_export", export)
    results: list[tuple[embedding_export.Export, bool]] = []

    def worker() -> None:
        results.append(embedding_export.cached_export("some/model", tmp_path))

    first = threading.Thread(target=worker)
    first.start()
    inside.wait(30)
    others = [threading.Thread(target=worker) for _ in range(2)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(60)
    assert len(calls) == 1
    assert sum(made for _, made in results) == 1 and len(results) == 3
    folders = {export.folder for export, _ in results}
    assert len(folders) == 1
    entry = folders.pop()
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name, entry.name + ".lock"]


def test_a_failed_export_leaves_no_entry(tmp_path, monkeypatch):
    def broken(model: str, into: Path) -> None:
        (into / "half.onnx").write_text("...")
        raise RuntimeError("export failed")

    monkeypatch.setattr(embedding_export, "_export", broken)
    with pytest.raises(RuntimeError):
        embedding_export.cached_export("some/model", tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]
    assert embedding_export.find_export("some/model", tmp_path) is None


# -- a missing runtime --------------------------------------------------------------------------

#: Makes the runtimes fail to import. Found, then failing (not "not found"): torch and
#: transformers probe optional modules with ``importlib.util.find_spec``, which must work.
BLOCK = """
import importlib.abc
import importlib.machinery
import sys

class Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ModuleNotFoundError(f"No module named {module.__name__!r}", name=module.__name__)

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"onnxruntime", "openvino"}:
            return importlib.machinery.ModuleSpec(name, Refuse())
        return None

sys.meta_path.insert(0, Block())
"""

LOAD = """
import json, sys
from pipeline.contract.errors import ConfigError
from plugins.predictors.sentence_embedding import SentenceEmbedding, SentenceEmbeddingParams

model = {"model": sys.argv[3]} if len(sys.argv) > 3 else {}
try:
    params = SentenceEmbeddingParams(backend=sys.argv[1], backend_cache=sys.argv[2], **model)
    stage = SentenceEmbedding(params)
    print(json.dumps({"backend": stage.backend, "why": stage.backend_reason}))
except ConfigError as exc:
    print(json.dumps({"key": exc.key, "message": str(exc)}))
"""


def _load_blocked(backend: str, cache: Path, *model: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(LOAD), backend, str(cache), *model],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess  # a Python that imports sentence-transformers per case: seconds
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_missing_runtime_is_a_config_error_naming_the_key_and_the_extra(backend, tmp_path):
    error = _load_blocked(backend, tmp_path)
    assert error["key"] == "predictor.params.backend"
    assert f"bulkinfer[{backend}]" in error["message"]
    assert list(tmp_path.iterdir()) == []  # nothing exported


@pytest.mark.subprocess
@pytest.mark.model  # auto exports the model, then finds no runtime to run it: torch
def test_auto_falls_back_to_torch_when_no_runtime_imports(tiny_models, tmp_path):
    ran = _load_blocked("auto", tmp_path, str(tiny_models["max"]))
    assert ran["backend"] == "torch"
    assert "no runtime to check the export with" in ran["why"]


# -- the packaged MiniLM: export, vectors, cache ------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backend-cache")


@pytest.fixture(scope="module")
def torch_model() -> SentenceEmbedding:
    return SentenceEmbedding(SentenceEmbeddingParams(backend="torch"))


@pytest.fixture(scope="module")
def torch_vectors(torch_model) -> np.ndarray:
    return _vectors(torch_model(pa.table({"text": _samples()})))


#: Lowest cosine to the torch vectors on the 300 shipped sentences, per variant. Measured
#: (benchmarks/RESULTS.md, "Embedding backends"): ONNX Runtime 1.000000 (the same graph),
#: OpenVINO 0.99998, ONNX Runtime int8 0.985.
FLOORS = {"onnx": 0.9999, "openvino": 0.9999, "openvino bf16": 0.9999, "onnx int8": 0.97}
VARIANTS = [
    pytest.param("onnx", marks=needs_onnx, id="onnx"),
    pytest.param("openvino", marks=needs_openvino, id="openvino"),
    pytest.param("openvino bf16", marks=needs_openvino, id="openvino-bf16"),
    pytest.param("onnx int8", marks=needs_onnx, id="onnx-int8"),
]


@pytest.mark.model
@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_vectors_match_torch_and_the_export_is_made_once(variant, torch_vectors, cache):
    backend, quantize, model_dtype = st_backends.parse_candidate(variant)
    params = SentenceEmbeddingParams(
        backend=backend, quantize=quantize, model_dtype=model_dtype, backend_cache=str(cache)
    )
    first = SentenceEmbedding(params)
    assert (first.backend, first.quantize, first.model_dtype) == (backend, quantize, model_dtype)
    marker = Path(first.model_folder) / embedding_export.MARKER
    made = marker.stat().st_mtime_ns
    entries = sorted(p.name for p in cache.iterdir())

    vectors = _vectors(first(pa.table({"text": _samples()})))
    assert vectors.shape == torch_vectors.shape
    lowest = cosine(vectors, torch_vectors).min()
    print(f"{variant}: lowest cosine to torch {lowest:.6f}")
    assert lowest >= FLOORS[variant]

    again = SentenceEmbedding(params)  # a second worker: reads the entry, exports nothing
    assert again.model_folder == first.model_folder
    assert marker.stat().st_mtime_ns == made
    assert sorted(p.name for p in cache.iterdir()) == entries
    assert embedding_export.cached_export(first.resolved_model, cache)[1] is False
    # The same batch, the same vectors (int8 scales activations per batch: not per row).
    np.testing.assert_allclose(_vectors(again(pa.table({"text": _samples()}))), vectors)
    # Alone (no padding, other neighbours), a row's vector stays within the floor of its own
    # in the batch; exactly the same in float32.
    alone = np.concatenate([_vectors(again(pa.table({"text": [t]}))) for t in _samples()[:6]])
    assert cosine(alone, vectors[:6]).min() >= FLOORS[variant]
    if variant in ("onnx", "openvino"):
        np.testing.assert_allclose(alone, vectors[:6], atol=1e-5)


@pytest.mark.model
@needs_onnx
def test_the_tokenizer_file_gives_sentence_transformers_token_ids(torch_model, cache):
    export, _ = embedding_export.cached_export(torch_model.resolved_model, cache)
    texts = _samples() + embedding_export.check_texts()
    ours = st_backends.TokenizerFile(export).encode(texts)
    theirs = torch_model.model.tokenizer(
        texts, padding=True, truncation=True, max_length=torch_model.model.max_seq_length
    )
    for name in export.inputs:
        np.testing.assert_array_equal(ours[name], np.asarray(theirs[name]))
    short = st_backends.TokenizerFile(export, max_seq_length=5)
    assert max(short.lengths(texts)) == 5


@pytest.mark.model
@needs_onnx
def test_token_ids_max_seq_length_and_normalize_on_an_exported_model(torch_model, cache):
    params = SentenceEmbeddingParams(backend="onnx", backend_cache=str(cache))
    stage = SentenceEmbedding(params)
    texts = _samples()[:6]
    by_text = _vectors(stage(pa.table({"text": texts})))
    ids = torch_model.model.tokenizer(texts, padding=True, truncation=True)  # a tokenize stage
    stage.params = params.model_copy(update={"input_column": "input_ids"})
    tokens = pa.table({"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})
    np.testing.assert_allclose(_vectors(stage(tokens)), by_text, atol=1e-5)

    unit = SentenceEmbedding(params.model_copy(update={"normalize": True}))
    np.testing.assert_allclose(
        np.linalg.norm(_vectors(unit(pa.table({"text": texts}))), axis=1), 1, atol=1e-5
    )
    short = SentenceEmbedding(params.model_copy(update={"max_seq_length": 4}))
    a = _vectors(short(pa.table({"text": ["one two three four five six seven eight"]})))
    b = _vectors(short(pa.table({"text": ["one two three four"]})))
    np.testing.assert_allclose(a, b, atol=1e-5)  # both cut to the same first tokens
    assert short.token_lengths(["one two three four five six"]) == [4]
    assert stage.counters() == {"rows_onnx": 12.0} and stage.counters() == {}


# -- auto ---------------------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.skipif(not (HAS_ONNX or HAS_OPENVINO), reason="no onnxruntime, no openvino")
def test_auto_checks_once_runs_a_backend_that_matches_torch_and_says_why(
    torch_vectors, cache, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the planner gives each actor
    params = SentenceEmbeddingParams(backend_cache=str(cache))
    first = SentenceEmbedding(params)
    assert first.backend in ("torch", "onnx", "openvino") and first.quantize is None
    assert first.model_dtype in (None, "bfloat16")
    assert "check texts at 1 thread(s)" in first.backend_reason
    stored = st_backends.choice_file(first.resolved_model, None, 1, cache)
    checked = stored.stat().st_mtime_ns
    record = json.loads(stored.read_text())
    assert set(record["figures"]) == set(st_backends.candidates(None))
    chosen = st_backends.candidate_name(first.backend, None, first.model_dtype)
    assert record["figures"][chosen]["rows_per_s"] == max(
        f["rows_per_s"]
        for name, f in record["figures"].items()
        if f["cosine_min"] >= st_backends.FLOAT_MIN_COSINE
    )

    again = SentenceEmbedding(params)  # a second worker reads the stored choice
    assert (again.backend, again.backend_reason) == (first.backend, first.backend_reason)
    assert stored.stat().st_mtime_ns == checked
    assert cosine(_vectors(again(pa.table({"text": _samples()}))), torch_vectors).min() >= 0.9999

    from plugins.predictors.sentence_embedding import describe_backend

    line = describe_backend(params)
    assert line.startswith(f"backend auto -> {chosen} (checked ")
    assert "workers with a GPU run torch" in line


def test_float32_keeps_auto_to_float32_compute():
    flags = {"avx512_bf16"}
    assert "openvino bf16" not in st_backends.candidates(None, flags, bf16=False)
    keys = [st_backends.choice_key("m", None, 1, bf16) for bf16 in (True, False)]
    if HAS_OPENVINO:
        assert (keys[0] != keys[1]) == bool(embedding_export.cpu_flag_set() & flags)


def test_auto_on_a_gpu_or_in_half_precision_is_torch_without_a_check(tmp_path):
    from plugins.predictors.sentence_embedding import describe_backend

    assert describe_backend(SentenceEmbeddingParams(device="cuda")) == (
        "backend auto -> torch (device cuda)"
    )
    half = SentenceEmbeddingParams(model_dtype="float16", backend_cache=str(tmp_path))
    assert describe_backend(half) == "backend auto -> torch (model_dtype float16)"
    fresh = describe_backend(SentenceEmbeddingParams(backend_cache=str(tmp_path)))
    if len(st_backends.candidates(None)) > 1:
        assert fresh.startswith("backend auto: not checked yet")
    else:
        assert "only torch is installed" in fresh
    assert list(tmp_path.iterdir()) == []  # describing exports and checks nothing


# -- other module stacks (tiny models) ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from plugins.samples.models import build_sentence_encoder

    root = tmp_path_factory.mktemp("tiny-sentence")
    shape = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "vocab_size": 1000}
    stacks = {
        "cls+dense+normalize": {"pooling": "cls", "dense": 16, "normalize": True},
        "max": {"pooling": "max"},
        "mean_sqrt_len_tokens": {"pooling": "mean_sqrt_len_tokens"},
        "prompt": {"prompt": "query: "},
    }
    return {
        name: build_sentence_encoder(root / name.replace("+", "-"), **shape, **options)
        for name, options in stacks.items()
    }


@pytest.mark.model
@needs_onnx
@pytest.mark.parametrize("stack", ["cls+dense+normalize", "max", "mean_sqrt_len_tokens"])
def test_pooling_dense_and_normalize_modules_are_exported_as_the_folder_lists_them(
    stack, tiny_models, tmp_path
):
    folder = str(tiny_models[stack])
    texts = _samples()[:32]
    expected = _vectors(
        SentenceEmbedding(SentenceEmbeddingParams(model=folder, backend="torch"))(
            pa.table({"text": texts})
        )
    )
    params = SentenceEmbeddingParams(model=folder, backend="onnx", backend_cache=str(tmp_path))
    got = _vectors(SentenceEmbedding(params)(pa.table({"text": texts})))
    assert got.shape == expected.shape
    assert cosine(got, expected).min() >= 0.9999


@pytest.mark.model
@needs_onnx
def test_a_model_the_export_does_not_cover_is_refused_or_left_to_torch(tiny_models, tmp_path):
    folder = str(tiny_models["prompt"])
    with pytest.raises(ConfigError) as error:
        SentenceEmbedding(
            SentenceEmbeddingParams(model=folder, backend="onnx", backend_cache=str(tmp_path))
        )
    assert error.value.key == "predictor.params.backend"
    assert "prepends the prompt 'query'" in str(error.value) and "backend=torch" in str(error.value)
    auto = SentenceEmbedding(SentenceEmbeddingParams(model=folder, backend_cache=str(tmp_path)))
    assert auto.backend == "torch" and "prepends the prompt" in auto.backend_reason
    assert not any(p.is_dir() and p.name != "auto" for p in tmp_path.iterdir())  # no entry


@pytest.mark.model
@needs_onnx
def test_an_export_in_another_process_waits_for_the_first(tiny_models, tmp_path):
    """Two processes ask for the same missing entry at once: one export, the same folder."""
    script = (
        "import sys; from plugins import embedding_export as e;"
        "x, made = e.cached_export(sys.argv[1], sys.argv[2]); print(made, x.folder)"
    )
    folder = str(tiny_models["max"])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, folder, str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=900) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    lines = sorted(out.strip().splitlines()[-1] for out, _ in outputs)
    assert [line.split()[0] for line in lines] == ["False", "True"]
    assert len({line.split()[1] for line in lines}) == 1
