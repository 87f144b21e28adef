"""sentence_embedding on ONNX Runtime and OpenVINO: params, vectors against torch, the export cache.

The backend tests run where the backend's libraries are installed (``pip install
'bulkinfer[onnx]'`` / ``'bulkinfer[openvino]'``) and are skipped elsewhere; the params, the cache
logic and the missing-library error are checked everywhere.
"""

from __future__ import annotations

import importlib.util
import json
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

from plugins import st_backends
from plugins.predictors.sentence_embedding import SentenceEmbedding, SentenceEmbeddingParams

TEXTS = [
    "A cat sits on the mat.",
    "Stocks fell sharply today after the report.",
    "The cat is on the rug.",
    "Hi",
    "Shipping was fast and the box arrived in perfect condition, well packed and on time.",
    "I returned it.",
]

#: Lowest cosine similarity to the torch vectors, per variant. Measured on the 300 shipped
#: sample sentences (benchmarks/RESULTS.md, "Embedding backends"): ONNX 1.000000 (float32, the
#: same graph), OpenVINO 0.99998, ONNX int8 (dynamic quantisation) 0.983 (mean 0.992).
TOLERANCE = {("onnx", None): 0.9999, ("openvino", None): 0.9999, ("onnx", "int8"): 0.97}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


HAS_ONNX = _has("optimum.onnxruntime") and _has("onnxruntime")
HAS_OPENVINO = _has("optimum.intel") and _has("openvino")


def _vectors(table: pa.Table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


# -- params -------------------------------------------------------------------------------------


def test_backend_params_accept_the_three_backends_and_int8_on_onnx():
    assert SentenceEmbeddingParams().backend == "torch"
    for backend in ("torch", "onnx", "openvino"):
        assert SentenceEmbeddingParams(backend=backend).backend == backend
    assert SentenceEmbeddingParams(backend="onnx", quantize="int8").quantize == "int8"


@pytest.mark.parametrize(
    "params, words",
    [
        ({"backend": "tensorrt"}, ["backend", "torch", "onnx", "openvino"]),
        ({"backend": "torch", "quantize": "int8"}, ["quantize", "backend=onnx"]),
        ({"backend": "openvino", "quantize": "int8"}, ["quantize", "backend=onnx"]),
        ({"backend": "onnx", "quantize": "int4"}, ["quantize", "int8"]),
        ({"backend": "onnx", "model_dtype": "float16"}, ["model_dtype", "backend=torch"]),
    ],
)
def test_bad_backend_params_are_refused(params, words):
    with pytest.raises(ValidationError) as error:
        SentenceEmbeddingParams(**params)
    for word in words:
        assert word in str(error.value)


def test_the_cli_names_the_key_of_a_bad_backend(cli):
    done = cli("predictor.params.backend=tensorrt", "run.dry_run=true")
    assert done.returncode == 2
    assert "predictor.params.backend" in done.stderr


# -- a missing backend library -----------------------------------------------------------------

#: Makes the backends' libraries fail to import. Found, then failing (not "not found"): torch
#: and transformers probe optional modules with ``importlib.util.find_spec``, which must work.
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
        if name.split(".")[0] in {"optimum", "onnxruntime", "openvino"}:
            return importlib.machinery.ModuleSpec(name, Refuse())
        return None

sys.meta_path.insert(0, Block())
"""

LOAD = """
import json, sys
from pipeline.contract.errors import ConfigError
from plugins.predictors.sentence_embedding import SentenceEmbedding, SentenceEmbeddingParams

try:
    SentenceEmbedding(SentenceEmbeddingParams(backend=sys.argv[1], backend_cache=sys.argv[2]))
except ConfigError as exc:
    print(json.dumps({"key": exc.key, "message": str(exc)}))
"""


@pytest.mark.subprocess  # a Python that imports sentence-transformers per case: seconds
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_missing_backend_library_is_a_config_error_naming_the_key(backend, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(LOAD), backend, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout.strip().splitlines()[-1])
    assert error["key"] == "predictor.params.backend"
    assert f"bulkinfer[{backend}]" in error["message"]
    assert list(tmp_path.iterdir()) == []  # nothing exported


# -- the cache ----------------------------------------------------------------------------------


def test_cache_entries_differ_by_model_content_backend_and_quantisation(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1234")
    onnx = st_backends.entry_name(st_backends.export_key(str(model), "onnx", None))
    assert onnx == st_backends.entry_name(st_backends.export_key(str(model), "onnx", None))
    int8 = st_backends.entry_name(st_backends.export_key(str(model), "onnx", "int8"))
    openvino = st_backends.entry_name(st_backends.export_key(str(model), "openvino", None))
    (model / "weights.bin").write_bytes(b"12345")
    changed = st_backends.entry_name(st_backends.export_key(str(model), "onnx", None))
    assert len({onnx, int8, openvino, changed}) == 4
    assert onnx.startswith("model-onnx-") and int8.startswith("model-onnx-int8-")


def test_int8_configuration_follows_the_processor():
    assert st_backends.int8_config("aarch64", set()) == "arm64"
    assert st_backends.int8_config("x86_64", {"avx2", "avx512f", "avx512_vnni"}) == "avx512_vnni"
    assert st_backends.int8_config("x86_64", {"avx2", "avx512f"}) == "avx512"
    assert st_backends.int8_config("x86_64", {"avx2"}) == "avx2"


def test_concurrent_exports_leave_one_complete_entry(tmp_path, monkeypatch):
    """Workers exporting at once: each writes its own folder, one rename wins, no debris."""
    started, release = threading.Barrier(4, timeout=60), threading.Event()  # 3 workers + us

    def slow_export(model, backend, quantize, key, into: Path) -> None:
        (into / "model.onnx").write_text(f"from {threading.get_ident()}")
        started.wait()  # all three are exporting at the same time
        release.wait(60)
        (into / st_backends.MARKER).write_text(json.dumps(key))

    monkeypatch.setattr(st_backends, "_export", slow_export)
    results: list[tuple[Path, bool]] = []
    workers = [
        threading.Thread(
            target=lambda: results.append(
                st_backends.cached_export("some/model", "onnx", None, tmp_path)
            )
        )
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    started.wait()
    release.set()
    for w in workers:
        w.join()
    folders = {folder for folder, _ in results}
    assert len(folders) == 1 and sum(exported for _, exported in results) == 1
    assert [p.name for p in tmp_path.iterdir()] == [folders.pop().name]  # no temp folders left


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(model, backend, quantize, key, into: Path) -> None:
        (into / "half.onnx").write_text("...")
        raise RuntimeError("export failed")

    monkeypatch.setattr(st_backends, "_export", broken)
    with pytest.raises(RuntimeError):
        st_backends.cached_export("some/model", "onnx", None, tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- the backends against torch -----------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    model = SentenceEmbedding(SentenceEmbeddingParams())
    return _vectors(model(pa.table({"text": TEXTS})))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backend-cache")


VARIANTS = [
    pytest.param("onnx", None, marks=pytest.mark.skipif(not HAS_ONNX, reason="no optimum-onnx")),
    pytest.param("onnx", "int8", marks=pytest.mark.skipif(not HAS_ONNX, reason="no optimum-onnx")),
    pytest.param(
        "openvino", None, marks=pytest.mark.skipif(not HAS_OPENVINO, reason="no optimum-intel")
    ),
]


@pytest.mark.parametrize("backend, quantize", VARIANTS)
def test_backend_vectors_match_torch_take_token_ids_and_the_export_is_reused(
    backend, quantize, torch_vectors, cache
):
    params = SentenceEmbeddingParams(backend=backend, quantize=quantize, backend_cache=str(cache))
    first = SentenceEmbedding(params)
    entries = sorted(p.name for p in cache.iterdir())
    folder = first.model_folder
    marker = Path(folder) / st_backends.MARKER
    made = marker.stat().st_mtime_ns

    vectors = _vectors(first(pa.table({"text": TEXTS})))
    assert vectors.shape == torch_vectors.shape
    assert _cosines(vectors, torch_vectors).min() >= TOLERANCE[(backend, quantize)]

    ids = first.model.tokenizer(TEXTS, padding=True, truncation=True)  # a tokenize stage's output
    first.params = params.model_copy(update={"input_column": "input_ids"})
    tokens = pa.table({"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]})
    np.testing.assert_allclose(_vectors(first(tokens)), vectors, atol=1e-5)

    again = SentenceEmbedding(params)  # a second worker: loads the cached export
    assert again.model_folder == folder
    assert marker.stat().st_mtime_ns == made
    assert sorted(p.name for p in cache.iterdir()) == entries
    exported = st_backends.cached_export(first.resolved_model, backend, quantize, cache)
    assert exported == (Path(folder), False)
    np.testing.assert_allclose(_vectors(again(pa.table({"text": TEXTS}))), vectors, atol=1e-6)
